package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{3 * s}, 3 * s},
		{[]time.Duration{5 * s, 1 * s, 3 * s}, 3 * s},
		{[]time.Duration{4 * s, 1 * s, 3 * s, 2 * s}, 2500 * time.Millisecond},
	} {
		in := append([]time.Duration(nil), c.in...)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in { // median must not sort its input in place
			if in[i] != c.in[i] {
				t.Errorf("median reordered its input: %v", c.in)
			}
		}
	}
	d := []time.Duration{2 * s, 9 * s, 4 * s}
	if minDur(d) != 2*s || maxDur(d) != 9*s {
		t.Errorf("min/max of %v = %v/%v", d, minDur(d), maxDur(d))
	}
	if r := ratio(11*s, 10*s); r < 1.0999 || r > 1.1001 {
		t.Errorf("ratio = %v, want 1.1", r)
	}
	if ratio(s, 0) != 0 {
		t.Error("ratio by zero must be 0")
	}
}

func TestReplaceSectionsNew(t *testing.T) {
	doc := replaceSections("", map[string]string{
		"memory": wrapSection("memory", "M1"),
		"host":   wrapSection("host", "H1"),
		"boot":   wrapSection("boot", "B1"),
	})
	if !strings.HasPrefix(doc, resultsTitle) {
		t.Fatalf("no title:\n%s", doc)
	}
	h, b, m := strings.Index(doc, "H1"), strings.Index(doc, "B1"), strings.Index(doc, "M1")
	if h < 0 || b < 0 || m < 0 || h > b || b > m {
		t.Fatalf("sections missing or out of order:\n%s", doc)
	}
}

func TestReplaceSectionsKeepsOthers(t *testing.T) {
	old := resultsTitle + "\n" + wrapSection("host", "old host") + "\n\n" +
		wrapSection("boot", "old boot\n| a | b |") + "\n\nhand-written notes\n\n" +
		wrapSection("checkpoint", "checkpoint numbers") + "\n\n" +
		wrapSection("memory", "old memory") + "\n"
	doc := replaceSections(old, map[string]string{
		"host": wrapSection("host", "new host"),
		"boot": wrapSection("boot", "new boot"),
	})
	for _, want := range []string{"new host", "new boot", "hand-written notes", "checkpoint numbers", "old memory"} {
		if !strings.Contains(doc, want) {
			t.Errorf("lost %q:\n%s", want, doc)
		}
	}
	for _, gone := range []string{"old host", "old boot", "| a | b |"} {
		if strings.Contains(doc, gone) {
			t.Errorf("kept %q:\n%s", gone, doc)
		}
	}
	if strings.Count(doc, startMarker("boot")) != 1 || strings.Count(doc, endMarker("boot")) != 1 {
		t.Errorf("boot markers duplicated:\n%s", doc)
	}
	if strings.Index(doc, "new boot") > strings.Index(doc, "hand-written notes") {
		t.Errorf("boot section moved:\n%s", doc)
	}
	// Running again with the same sections changes nothing.
	if again := replaceSections(doc, map[string]string{"boot": wrapSection("boot", "new boot")}); again != doc {
		t.Errorf("not idempotent:\n%s\n---\n%s", doc, again)
	}
}

func TestReplaceSectionsAppendsMissing(t *testing.T) {
	old := "# someone's file\n\nintro\n"
	doc := replaceSections(old, map[string]string{"memory": wrapSection("memory", "M")})
	if !strings.HasPrefix(doc, old) || !strings.HasSuffix(doc, endMarker("memory")+"\n") {
		t.Errorf("memory not appended:\n%s", doc)
	}
}

func TestUpdateResultsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := updateResults(path, map[string]string{"boot": wrapSection("boot", "one")}); err != nil {
		t.Fatal(err)
	}
	if err := updateResults(path, map[string]string{"memory": wrapSection("memory", "two")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "one") || !strings.Contains(string(b), "two") {
		t.Errorf("file lost a section:\n%s", b)
	}
}

func TestSelectBenchmarks(t *testing.T) {
	if s, err := selectBenchmarks(""); err != nil || !s["boot"] || !s["memory"] {
		t.Errorf("default = %v, %v", s, err)
	}
	if s, err := selectBenchmarks("memory"); err != nil || s["boot"] || !s["memory"] {
		t.Errorf("memory = %v, %v", s, err)
	}
	if _, err := selectBenchmarks("boot,nope"); err == nil {
		t.Error("unknown benchmark accepted")
	}
}
