package main

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
	outTable = "table"
	outJSON  = "json"
	outYAML  = "yaml"
)

// show prints v as JSON or YAML when asked, else calls table with an aligning writer.
func (a *app) show(v any, table func(w io.Writer)) error {
	switch a.output {
	case outJSON:
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case outYAML:
		b, err := toYAML(v)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(b)
		return err
	}
	tw := newTable(a.stdout)
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

// printSafe prints a formatted message for people to w, made safe as tables are.
func printSafe(w io.Writer, format string, args ...any) {
	io.WriteString(w, textsafe.Text(fmt.Sprintf(format, args...), 0))
}

// say prints a confirmation for people: not with --quiet, nor when the output is for programs.
func (a *app) say(format string, args ...any) {
	if a.quiet || a.output != outTable {
		return
	}
	printSafe(a.stdout, format+"\n", args...)
}

// warn prints a note on stderr unless --quiet.
func (a *app) warn(format string, args ...any) {
	if !a.quiet {
		printSafe(a.stderr, "hv: "+format+"\n", args...)
	}
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

// toYAML renders v with the same field names as its JSON (the API's snake_case) and in the
// same order: YAML is a superset of JSON, so the JSON is parsed as YAML and restyled.
func toYAML(v any) ([]byte, error) {
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

// kv writes "Key:\tvalue" rows, skipping empty values.
func kv(w io.Writer, rows ...[2]string) {
	for _, r := range rows {
		if r[1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
		}
	}
}
