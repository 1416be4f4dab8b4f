package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/hvproject/hv/internal/textsafe"
	"go.yaml.in/yaml/v3"
)

// Output formats of -o.
const (
	OutTable = "table"
	OutJSON  = "json"
	OutYAML  = "yaml"
)

// Show prints v as JSON or YAML when asked, else calls table with an aligning writer.
func (a *App) Show(v any, table func(w io.Writer)) error {
	switch a.Output {
	case OutJSON:
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutYAML:
		b, err := ToYAML(v)
		if err != nil {
			return err
		}
		_, err = a.Stdout.Write(b)
		return err
	}
	tw := NewTable(a.Stdout)
	table(safeWriter{tw})
	return tw.Flush()
}

// safeWriter replaces the control characters, line breaks and tabs aside, of
// all that tables print: they show what guests report and hvd says, and an
// escape sequence in that must not reach the terminal (OSC 52 writes the
// clipboard). Each Write must hold whole characters, as fmt's do. JSON and
// YAML escape control characters themselves.
type safeWriter struct{ w io.Writer }

func (s safeWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, textsafe.Text(string(p), 0)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// PrintSafe prints a formatted message for people to w, made safe as tables are.
func PrintSafe(w io.Writer, format string, args ...any) {
	io.WriteString(w, textsafe.Text(fmt.Sprintf(format, args...), 0))
}

// Say prints a confirmation for people: not with --quiet, nor when the output is for programs.
func (a *App) Say(format string, args ...any) {
	if a.Quiet || a.Output != OutTable {
		return
	}
	PrintSafe(a.Stdout, format+"\n", args...)
}

// Warn prints a note on stderr unless --quiet.
func (a *App) Warn(format string, args ...any) {
	if !a.Quiet {
		PrintSafe(a.Stderr, "hv: "+format+"\n", args...)
	}
}

// NewTable aligns the columns of the tab-separated rows written to it.
func NewTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

// ToYAML renders v with the same field names as its JSON (the API's snake_case) and in the
// same order: YAML is a superset of JSON, so the JSON is parsed as YAML and restyled.
func ToYAML(v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	err = enc.Close()
	return buf.Bytes(), err
}

// blockStyle drops JSON's flow style and quoting; the encoder quotes again where needed.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// KV writes "Key:\tvalue" rows, skipping empty values.
func KV(w io.Writer, rows ...[2]string) {
	for _, r := range rows {
		if r[1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
		}
	}
}
