package qga

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// hugeInterfaces is a well-formed guest-network-get-interfaces answer of
// about size bytes, as a hostile guest could send.
func hugeInterfaces(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"return": [`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name": "eth%d", "hardware-address": "52:54:00:00:00:01", "ip-addresses": [`+
			`{"ip-address-type": "ipv4", "ip-address": "10.0.0.1", "prefix": 24},`+
			`{"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe00:1", "prefix": 64}]}`, i)
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

// A guest answering with a 22 MiB interface list must not make hvd hold or
// even allocate it: ten clients reading it at once stay within 32 MiB, and
// each gets an error naming the command and its limit.
func TestHugeAnswerDoesNotExhaustMemory(t *testing.T) {
	big := hugeInterfaces(22 << 20)
	const clients = 10
	cs := make([]*Client, clients)
	for i := range cs {
		cs[i], _ = startAgent(t, func(a *fakeAgent, r fakeReq) string {
			if r.Execute == "guest-network-get-interfaces" {
				a.conn.Write(big) // straight from the shared slice: the fake allocates nothing
				return ""
			}
			return healthy(a, r)
		})
		if err := cs[i].Ping(testCtx(t)); err != nil { // synced before measuring
			t.Fatal(err)
		}
	}

	var before, during, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	results := make([][]Interface, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { results[i], errs[i] = c.Interfaces(testCtx(t)) })
	}
	wg.Wait()
	runtime.ReadMemStats(&during)
	runtime.GC()
	runtime.ReadMemStats(&after)
	allocated := during.TotalAlloc - before.TotalAlloc
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d clients reading %d MiB each: allocated %.1f MiB, retained %.1f MiB",
		clients, len(big)>>20, float64(allocated)/(1<<20), float64(retained)/(1<<20))
	if allocated > 32<<20 || retained > 32<<20 {
		t.Errorf("allocated %d MiB and retained %d MiB; want both under 32 MiB", allocated>>20, retained>>20)
	}
	for i, err := range errs {
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "guest-network-get-interfaces") ||
			!strings.Contains(err.Error(), "over 1 MiB") {
			t.Errorf("client %d: Interfaces = %d interfaces, %v; want an error naming the command and its 1 MiB limit", i, len(results[i]), err)
			break
		}
	}
	t.Logf("error: %v", errs[0])
	runtime.KeepAlive(results)
	runtime.KeepAlive(cs)

	// The rest of the line was skipped: the stream is usable again.
	for _, c := range cs {
		if err := c.Ping(testCtx(t)); err != nil {
			t.Fatalf("Ping after an oversized answer: %v", err)
		}
	}
}

// readLine holds at most limit bytes (line ending included), skips the rest of a longer line, and
// reads the next line whole.
func TestReadLineLimit(t *testing.T) {
	const limit = 100
	in := strings.Repeat("x", 1000) + "\n" + strings.Repeat("y", limit-2) + "\r\n"
	br := bufio.NewReaderSize(strings.NewReader(in), 16)
	_, err := readLine(br, nil, limit)
	if !errors.Is(err, errLineTooLong) || !strings.Contains(err.Error(), "over 100 bytes") {
		t.Fatalf("long line: %v", err)
	}
	line, err := readLine(br, nil, limit)
	if err != nil || string(line) != strings.Repeat("y", limit-2) || cap(line) > limit {
		t.Fatalf("next line: %q (cap %d), %v", line, cap(line), err)
	}
}

// A file read's answer may hold no more than its count needs.
func TestFileReadAnswerBoundedByCount(t *testing.T) {
	chunk := base64.StdEncoding.EncodeToString(make([]byte, 64<<10))
	s := newScript().
		on("guest-file-read", fmt.Sprintf(`{"return": {"count": %d, "buf-b64": %q, "eof": false}}`, 64<<10, chunk)).
		on("guest-file-seek", `{"return": {"position": 0, "eof": false}}`)
	c, _ := startAgent(t, s.handle)
	_, _, err := c.FileRead(testCtx(t), 1, 10)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "guest-file-read: answer too long: over 4") {
		t.Fatalf("FileRead(10 bytes) answered with 64 KiB = %v", err)
	}
	if _, _, err := c.FileSeek(testCtx(t), 1, 0, 0); err != nil {
		t.Fatalf("FileSeek after an oversized answer: %v", err)
	}
}

// An error answer's texts reach logs, API errors and terminals: control
// characters are replaced and the length bounded; the kind still comes
// through.
func TestErrorAnswerTextIsSafe(t *testing.T) {
	osc52 := "\x1b]52;c;cm0gLXJmIH4K\x07"
	desc := "open: No such file or directory" + osc52 + strings.Repeat("x", 3*maxErrorText)
	answer, _ := json.Marshal(map[string]*Error{"error": {Class: "GenericError\x1b[2J", Desc: desc}})
	s := newScript().on("guest-file-open", string(answer))
	c, _ := startAgent(t, s.handle)
	_, err := c.FileOpen(testCtx(t), "/x", "r")
	var ge *Error
	if !errors.As(err, &ge) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("FileOpen = %v", err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\x1b\x07") || len(ge.Desc) > maxErrorText || len(msg) > 2*maxErrorText {
		t.Errorf("error of %d bytes (desc %d): %.200q", len(msg), len(ge.Desc), msg)
	}
	if !strings.HasPrefix(ge.Desc, "open: No such file or directory\uFFFD]52;") || ge.Class != "GenericError\uFFFD[2J" {
		t.Errorf("desc %.60q, class %q", ge.Desc, ge.Class)
	}
}

// A description quoting a long path keeps the words it is classified by.
func TestErrorAnswerLongPathKeepsItsKind(t *testing.T) {
	desc := "failed to open file '/" + strings.Repeat("d", 4095) + "' (mode: 'r'): No such file or directory"
	answer, _ := json.Marshal(map[string]*Error{"error": {Class: "GenericError", Desc: desc}})
	c, _ := startAgent(t, newScript().on("guest-file-open", string(answer)).handle)
	if _, err := c.FileOpen(testCtx(t), "/x", "r"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("FileOpen = %.100v...; want ErrNotFound", err)
	}
}
