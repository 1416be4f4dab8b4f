package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// order is the benchmarks' run order, as bench passes it.
var order = []string{"boot", "memory", "exec", "copy", "checkpoint", "backup", "migrate"}

func TestReplaceSectionsNew(t *testing.T) {
	doc := replaceSections("", map[string]string{
		"memory": Wrap("memory", "M1"),
		"host":   Wrap("host", "H1"),
		"boot":   Wrap("boot", "B1"),
	}, order)
	if !strings.HasPrefix(doc, resultsTitle) {
		t.Fatalf("no title:\n%s", doc)
	}
	h, b, m := strings.Index(doc, "H1"), strings.Index(doc, "B1"), strings.Index(doc, "M1")
	if h < 0 || b < 0 || m < 0 || h > b || b > m {
		t.Fatalf("sections missing or out of order:\n%s", doc)
	}
}

func TestReplaceSectionsKeepsOthers(t *testing.T) {
	old := resultsTitle + "\n" + Wrap("host", "old host") + "\n\n" +
		Wrap("boot", "old boot\n| a | b |") + "\n\nhand-written notes\n\n" +
		Wrap("checkpoint", "checkpoint numbers") + "\n\n" +
		Wrap("memory", "old memory") + "\n"
	doc := replaceSections(old, map[string]string{
		"host": Wrap("host", "new host"),
		"boot": Wrap("boot", "new boot"),
	}, order)
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
	if again := replaceSections(doc, map[string]string{"boot": Wrap("boot", "new boot")}, order); again != doc {
		t.Errorf("not idempotent:\n%s\n---\n%s", doc, again)
	}
}

func TestReplaceSectionsAppendsMissing(t *testing.T) {
	old := "# someone's file\n\nintro\n"
	doc := replaceSections(old, map[string]string{"memory": Wrap("memory", "M")}, order)
	if !strings.HasPrefix(doc, old) || !strings.HasSuffix(doc, endMarker("memory")+"\n") {
		t.Errorf("memory not appended:\n%s", doc)
	}
}

func TestUpdateResultsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := Update(path, map[string]string{"boot": Wrap("boot", "one")}, order); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, map[string]string{"memory": Wrap("memory", "two")}, order); err != nil {
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
