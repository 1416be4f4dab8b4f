package qmp_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
)

// The typed commands are checked against the schema of the QEMU installed
// here (query-qmp-schema), not against what this package believes: a
// misspelt member, a wrong JSON kind, a missing required member or an enum
// value QEMU does not know fails here without running each command.

type schemaMember struct {
	Name     string
	Type     string
	Optional bool // the member has a "default" (always null): it may be left out
}

func (m *schemaMember) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	_, m.Optional = raw["default"]
	// An alternate's members have no name, an enum's no type.
	for key, dst := range map[string]*string{"name": &m.Name, "type": &m.Type} {
		if b, ok := raw[key]; ok {
			if err := json.Unmarshal(b, dst); err != nil {
				return err
			}
		}
	}
	return nil
}

// schemaEntry is one entry of query-qmp-schema ("SchemaInfo").
type schemaEntry struct {
	Name        string         `json:"name"`
	MetaType    string         `json:"meta-type"`
	ArgType     string         `json:"arg-type"`
	RetType     string         `json:"ret-type"`
	JSONType    string         `json:"json-type"`
	Values      []string       `json:"values"`
	ElementType string         `json:"element-type"`
	Members     []schemaMember `json:"members"`
	Tag         string         `json:"tag"`
	Variants    []struct {
		Case string `json:"case"`
		Type string `json:"type"`
	} `json:"variants"`
}

type schema map[string]schemaEntry

var (
	schemaOnce sync.Once
	schemaData schema
	schemaErr  error
)

// qemuSchema reads the schema from a real QEMU, once for the test binary.
func qemuSchema(t *testing.T) schema {
	t.Helper()
	schemaOnce.Do(func() {
		ctx := qmp.Ctx(t)
		c, err := qmp.Dial(ctx, qmp.StartQEMU(t))
		if err != nil {
			schemaErr = err
			return
		}
		defer c.Close()
		var entries []schemaEntry
		if schemaErr = c.Execute(ctx, "query-qmp-schema", nil, &entries); schemaErr != nil {
			return
		}
		schemaData = schema{}
		for _, e := range entries {
			schemaData[e.Name] = e
		}
	})
	if schemaErr != nil {
		t.Fatalf("reading QEMU's schema: %v", schemaErr)
	}
	return schemaData
}

// members returns an object type's members: the base's, and those of the
// variant chosen by tagValue ("" for every variant's).
func (s schema) members(e schemaEntry, tagValue string) []schemaMember {
	ms := slices.Clone(e.Members)
	for _, v := range e.Variants {
		if tagValue == "" || v.Case == tagValue {
			ms = append(ms, s.members(s[v.Type], "")...)
		}
	}
	return ms
}

// checkValue reports where v (decoded with UseNumber) does not fit type typ.
// extra allows members the schema does not list (device_add takes any
// property of its driver).
func (s schema) checkValue(path, typ string, v any, extra bool) []string {
	e, ok := s[typ]
	if !ok {
		return []string{path + ": schema type " + typ + " not found"}
	}
	bad := func(format string, a ...any) []string { return []string{path + ": " + fmt.Sprintf(format, a...)} }
	switch e.MetaType {
	case "builtin":
		switch e.JSONType {
		case "value":
			return nil
		case "string":
			if _, ok := v.(string); !ok {
				return bad("%v is not a string", v)
			}
		case "int":
			n, ok := v.(json.Number)
			if !ok || strings.ContainsAny(string(n), ".eE") {
				return bad("%v is not an integer", v)
			}
		case "number":
			if _, ok := v.(json.Number); !ok {
				return bad("%v is not a number", v)
			}
		case "boolean":
			if _, ok := v.(bool); !ok {
				return bad("%v is not a boolean", v)
			}
		case "null":
			if v != nil {
				return bad("%v is not null", v)
			}
		default:
			return bad("builtin %s not handled by this test", e.JSONType)
		}
	case "enum":
		str, ok := v.(string)
		if !ok || !slices.Contains(e.Values, str) {
			return bad("%v is not one of %v", v, e.Values)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return bad("%v is not an array", v)
		}
		var errs []string
		for i, x := range a {
			errs = append(errs, s.checkValue(fmt.Sprintf("%s[%d]", path, i), e.ElementType, x, false)...)
		}
		return errs
	case "alternate":
		var all []string
		for _, m := range e.Members {
			errs := s.checkValue(path, m.Type, v, false)
			if len(errs) == 0 {
				return nil
			}
			all = append(all, errs...)
		}
		return bad("fits no branch of an alternate: %s", strings.Join(all, "; "))
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return bad("%v is not an object", v)
		}
		tagValue := ""
		if e.Tag != "" {
			tagValue, _ = o[e.Tag].(string)
		}
		ms := s.members(e, tagValue)
		if e.Tag != "" && len(e.Variants) > 0 && tagValue != "" && !slices.ContainsFunc(e.Variants, func(v struct {
			Case string `json:"case"`
			Type string `json:"type"`
		}) bool {
			return v.Case == tagValue
		}) {
			// Enum members without a variant of their own have only the base.
			ms = e.Members
		}
		var errs []string
		for k, x := range o {
			i := slices.IndexFunc(ms, func(m schemaMember) bool { return m.Name == k })
			if i < 0 {
				if !extra {
					errs = append(errs, path+": QEMU knows no member "+k)
				}
				continue
			}
			errs = append(errs, s.checkValue(path+"."+k, ms[i].Type, x, false)...)
		}
		for _, m := range ms {
			if _, ok := o[m.Name]; !ok && !m.Optional {
				errs = append(errs, path+": required member "+m.Name+" missing")
			}
		}
		return errs
	default:
		return bad("meta-type %s not handled by this test", e.MetaType)
	}
	return nil
}

// checkType reports the fields of Go type t that QEMU's type typ lacks, or
// whose kind differs. It checks answers and events, which hv decodes:
// every field must name a member, but members may lack a field.
func (s schema) checkType(path, typ string, t reflect.Type) []string {
	return s.checkTypeOnce(path, typ, t, map[typePair]bool{})
}

// typePair is a Go type being checked against a schema type; recursive
// types (ImageInfo.BackingImage) are checked once.
type typePair struct {
	schemaType string
	goType     reflect.Type
}

func (s schema) checkTypeOnce(path, typ string, t reflect.Type, done map[typePair]bool) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if done[typePair{typ, t}] {
		return nil
	}
	done[typePair{typ, t}] = true
	e, ok := s[typ]
	if !ok {
		return []string{path + ": schema type " + typ + " not found"}
	}
	bad := func(format string, a ...any) []string { return []string{path + ": " + fmt.Sprintf(format, a...)} }
	if e.MetaType == "builtin" && e.JSONType == "value" {
		return nil // any JSON value: whatever T the caller picked
	}
	if e.MetaType == "alternate" {
		var all []string
		for _, m := range e.Members {
			errs := s.checkTypeOnce(path, m.Type, t, done)
			if len(errs) == 0 {
				return nil
			}
			all = append(all, errs...)
		}
		return bad("%v fits no branch of an alternate: %s", t, strings.Join(all, "; "))
	}
	kindOK := func(jsonType string) bool { return e.MetaType == "builtin" && e.JSONType == jsonType }
	switch t.Kind() {
	case reflect.String:
		if !kindOK("string") && e.MetaType != "enum" {
			return bad("%v for a %s %s", t, e.MetaType, e.JSONType)
		}
	case reflect.Bool:
		if !kindOK("boolean") {
			return bad("%v for a %s %s", t, e.MetaType, e.JSONType)
		}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64, reflect.Uint32, reflect.Uint:
		if !kindOK("int") {
			return bad("%v for a %s %s", t, e.MetaType, e.JSONType)
		}
	case reflect.Float64:
		if !kindOK("number") {
			return bad("%v for a %s %s", t, e.MetaType, e.JSONType)
		}
	case reflect.Slice:
		if e.MetaType != "array" {
			return bad("%v for a %s", t, e.MetaType)
		}
		return s.checkTypeOnce(path+"[]", e.ElementType, t.Elem(), done)
	case reflect.Struct:
		if e.MetaType != "object" {
			return bad("%v for a %s", t, e.MetaType)
		}
		ms := s.members(e, "")
		var errs []string
		for _, f := range reflect.VisibleFields(t) {
			if !f.IsExported() || f.Anonymous {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				errs = append(errs, fmt.Sprintf("%s.%s: field without a json tag", path, f.Name))
				continue
			}
			i := slices.IndexFunc(ms, func(m schemaMember) bool { return m.Name == name })
			if i < 0 {
				errs = append(errs, fmt.Sprintf("%s.%s: QEMU knows no member %q", path, f.Name, name))
				continue
			}
			errs = append(errs, s.checkTypeOnce(path+"."+name, ms[i].Type, f.Type, done)...)
		}
		return errs
	default:
		return bad("Go kind %v not handled by this test", t.Kind())
	}
	return nil
}

// TestWireMatchesQEMUSchema validates every wire case's arguments, and every
// query's answer type, against the schema of the installed QEMU.
func TestWireMatchesQEMUSchema(t *testing.T) {
	s := qemuSchema(t)
	for _, c := range wireCases() {
		t.Run(c.name, func(t *testing.T) {
			name := c.cmd.Command()
			e, ok := s[name]
			if !ok || e.MetaType != "command" {
				t.Fatalf("QEMU has no command %q", name)
			}
			raw, err := qmp.Arguments(c.cmd)
			if err != nil {
				t.Fatal(err)
			}
			var v any = map[string]any{}
			if raw != nil {
				d := json.NewDecoder(bytes.NewReader(raw))
				d.UseNumber()
				if err := d.Decode(&v); err != nil {
					t.Fatal(err)
				}
			}
			for _, msg := range s.checkValue(name, e.ArgType, v, name == "device_add") {
				t.Error(msg)
			}
			if c.result != nil {
				for _, msg := range s.checkType(name+" answer", e.RetType, c.result) {
					t.Error(msg)
				}
			}
		})
	}
}

// eventCases are event data as QEMU 7.2 sends it and what each decodes to.
func eventCases() []struct {
	ev   qmp.Event
	want qmp.EventData
} {
	ev := func(name, data string) qmp.Event {
		e := qmp.Event{Name: name}
		if data != "" {
			e.Data = json.RawMessage(data)
		}
		return e
	}
	return []struct {
		ev   qmp.Event
		want qmp.EventData
	}{
		{ev("SHUTDOWN", `{"guest":true,"reason":"guest-panic"}`), qmp.ShutdownEvent{Guest: true, Reason: "guest-panic"}},
		{ev("STOP", ``), qmp.StopEvent{}},
		{ev("RESUME", ``), qmp.ResumeEvent{}},
		{ev("DEVICE_DELETED", `{"device":"data","path":"/machine/peripheral/data"}`), qmp.DeviceDeletedEvent{Device: "data", Path: "/machine/peripheral/data"}},
		{ev("BLOCK_JOB_COMPLETED", `{"type":"stream","device":"s","len":10,"offset":10,"speed":0,"error":"No space left on device"}`),
			qmp.BlockJobCompletedEvent{Type: "stream", Device: "s", Len: 10, Offset: 10, Error: "No space left on device"}},
		{ev("BLOCK_JOB_CANCELLED", `{"type":"backup","device":"f","len":10,"offset":3,"speed":1}`),
			qmp.BlockJobCancelledEvent{Type: "backup", Device: "f", Len: 10, Offset: 3, Speed: 1}},
		{ev("BLOCK_JOB_READY", `{"type":"mirror","device":"m","len":4,"offset":4,"speed":0}`), qmp.BlockJobReadyEvent{Type: "mirror", Device: "m", Len: 4, Offset: 4}},
		{ev("BLOCK_JOB_ERROR", `{"device":"m","operation":"write","action":"stop"}`), qmp.BlockJobErrorEvent{Device: "m", Operation: "write", Action: "stop"}},
		{ev("JOB_STATUS_CHANGE", `{"id":"m","status":"ready"}`), qmp.JobStatusChangeEvent{ID: "m", Status: qmp.JobReady}},
		{ev("MIGRATION", `{"status":"pre-switchover"}`), qmp.MigrationEvent{Status: qmp.MigrationPreSwitchover}},
		{ev("MIGRATION_PASS", `{"pass":3}`), qmp.MigrationPassEvent{Pass: 3}},
		{ev("BLOCK_IO_ERROR", `{"device":"","node-name":"hv-d0","operation":"write","action":"stop","nospace":true,"reason":"No space left on device"}`),
			qmp.BlockIOErrorEvent{NodeName: "hv-d0", Operation: "write", Action: "stop", NoSpace: true, Reason: "No space left on device"}},
		{ev("GUEST_PANICKED", `{"action":"pause"}`), qmp.GuestPanickedEvent{Action: "pause"}},
	}
}

// TestEventTypesMatchQEMUSchema checks each event type against the event's
// data in the installed QEMU's schema.
func TestEventTypesMatchQEMUSchema(t *testing.T) {
	s := qemuSchema(t)
	for _, c := range eventCases() {
		name := c.want.EventName()
		e, ok := s[name]
		if !ok || e.MetaType != "event" {
			t.Errorf("QEMU has no event %q", name)
			continue
		}
		for _, msg := range s.checkType(name, e.ArgType, reflect.TypeOf(c.want)) {
			t.Error(msg)
		}
	}
}

// TestWireCasesSetEveryField: a field no case sets is a field whose wire
// name nothing checks. Every type the package declares as a command, action,
// event or union branch must appear in the cases, and every exported field
// of every argument type must be non-zero in at least one.
func TestWireCasesSetEveryField(t *testing.T) {
	seen := map[reflect.Type]bool{}
	set := map[string]bool{} // "Type.Field"
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Struct:
			t := v.Type()
			if t.PkgPath() != reflect.TypeFor[qmp.Event]().PkgPath() {
				return // os.File and the like
			}
			seen[t] = true
			for i := range t.NumField() {
				if f := t.Field(i); f.IsExported() && !v.Field(i).IsZero() {
					set[typeName(t)+"."+f.Name] = true
					walk(v.Field(i))
				}
			}
		}
	}
	for _, c := range wireCases() {
		walk(reflect.ValueOf(c.cmd))
	}
	var unset []string
	for t := range seen {
		for _, f := range reflect.VisibleFields(t) {
			if f.IsExported() && !set[typeName(t)+"."+f.Name] {
				unset = append(unset, typeName(t)+"."+f.Name)
			}
		}
	}
	if len(unset) > 0 {
		slices.Sort(unset)
		t.Errorf("fields no wire case sets: %v", unset)
	}

	// The types the package declares with a marker method.
	markers := []string{"Command", "ActionType", "blockDriver", "netdevType", "qomType", "exportType", "EventName"}
	declared := map[string]string{}
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || !slices.Contains(markers, fn.Name.Name) {
				continue
			}
			rt := fn.Recv.List[0].Type
			if st, ok := rt.(*ast.StarExpr); ok {
				rt = st.X
			}
			if ix, ok := rt.(*ast.IndexExpr); ok { // QomGet[T]
				rt = ix.X
			}
			if id, ok := rt.(*ast.Ident); ok {
				declared[id.Name] = fn.Name.Name
			}
		}
	}
	if len(declared) < 50 {
		t.Fatalf("found only %d command types in the package's files: is the test run from internal/qmp?", len(declared))
	}
	seenNames := map[string]bool{}
	for t := range seen {
		seenNames[typeName(t)] = true
	}
	for _, c := range eventCases() {
		seenNames[typeName(reflect.TypeOf(c.want))] = true
	}
	for name, marker := range declared {
		if !seenNames[name] {
			t.Errorf("%s (it has %s) appears in no wire or event case", name, marker)
		}
	}
}

// typeName is t's name without type arguments.
func typeName(t reflect.Type) string {
	n, _, _ := strings.Cut(t.Name(), "[")
	return n
}

// TestDecodeEvent decodes QEMU 7.2's event data into each event type, and
// refuses another event's data or data of the wrong shape.
func TestDecodeEvent(t *testing.T) {
	for _, c := range eventCases() {
		// DecodeEvent[T] for the dynamic type of c.want.
		got, err := decodeAs(c.want, c.ev)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v, %v; want %#v", c.ev.Name, got, err, c.want)
		}
	}
	stop := qmp.Event{Name: "STOP"}
	if _, err := qmp.DecodeEvent[qmp.ShutdownEvent](stop); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "STOP event as SHUTDOWN") {
		t.Errorf("decoding STOP as SHUTDOWN = %v", err)
	}
	odd := qmp.Event{Name: "MIGRATION_PASS", Data: json.RawMessage(`{"pass":"three"}`)}
	if _, err := qmp.DecodeEvent[qmp.MigrationPassEvent](odd); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), `"three"`) {
		t.Errorf("decoding bad data = %v", err)
	}
}

func decodeAs(want qmp.EventData, ev qmp.Event) (qmp.EventData, error) {
	switch want.(type) {
	case qmp.ShutdownEvent:
		return qmp.DecodeEvent[qmp.ShutdownEvent](ev)
	case qmp.StopEvent:
		return qmp.DecodeEvent[qmp.StopEvent](ev)
	case qmp.ResumeEvent:
		return qmp.DecodeEvent[qmp.ResumeEvent](ev)
	case qmp.DeviceDeletedEvent:
		return qmp.DecodeEvent[qmp.DeviceDeletedEvent](ev)
	case qmp.BlockJobCompletedEvent:
		return qmp.DecodeEvent[qmp.BlockJobCompletedEvent](ev)
	case qmp.BlockJobCancelledEvent:
		return qmp.DecodeEvent[qmp.BlockJobCancelledEvent](ev)
	case qmp.BlockJobReadyEvent:
		return qmp.DecodeEvent[qmp.BlockJobReadyEvent](ev)
	case qmp.BlockJobErrorEvent:
		return qmp.DecodeEvent[qmp.BlockJobErrorEvent](ev)
	case qmp.JobStatusChangeEvent:
		return qmp.DecodeEvent[qmp.JobStatusChangeEvent](ev)
	case qmp.MigrationEvent:
		return qmp.DecodeEvent[qmp.MigrationEvent](ev)
	case qmp.MigrationPassEvent:
		return qmp.DecodeEvent[qmp.MigrationPassEvent](ev)
	case qmp.BlockIOErrorEvent:
		return qmp.DecodeEvent[qmp.BlockIOErrorEvent](ev)
	case qmp.GuestPanickedEvent:
		return qmp.DecodeEvent[qmp.GuestPanickedEvent](ev)
	}
	return nil, fmt.Errorf("no decodeAs case for %T", want)
}
