package httpapi

import (
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/hvproject/hv/api"
)

// openAPIDoc decodes api.OpenAPI into generic maps.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("api/openapi.yaml is not valid YAML: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("api/openapi.yaml: openapi = %q, want 3.x", v)
	}
	return doc
}

func mapAt(t *testing.T, m map[string]any, keys ...string) map[string]any {
	t.Helper()
	cur := m
	for i, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			t.Fatalf("api/openapi.yaml: %s is missing or not a mapping", strings.Join(keys[:i+1], "."))
		}
		cur = next
	}
	return cur
}

var openAPIMethods = map[string]bool{
	"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true,
}

// TestOpenAPIRoutes checks that routes() and the documented paths agree, both ways.
func TestOpenAPIRoutes(t *testing.T) {
	doc := openAPIDoc(t)
	paths := mapAt(t, doc, "paths")

	documented := map[string]bool{}
	opIDs := map[string]string{}
	for path, item := range paths {
		ops, ok := item.(map[string]any)
		if !ok {
			t.Errorf("paths.%s is not a mapping", path)
			continue
		}
		for method, op := range ops {
			if !openAPIMethods[method] {
				continue // parameters, summary, description...
			}
			key := strings.ToUpper(method) + " " + path
			documented[key] = true
			o, _ := op.(map[string]any)
			id, _ := o["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", key)
			} else if prev, dup := opIDs[id]; dup {
				t.Errorf("operationId %q used by both %s and %s", id, prev, key)
			} else {
				opIDs[id] = key
			}
			if s, _ := o["summary"].(string); s == "" {
				t.Errorf("%s: no summary", key)
			}
			if _, ok := o["responses"].(map[string]any); !ok {
				t.Errorf("%s: no responses", key)
			}
		}
	}

	served := map[string]bool{}
	for _, r := range (&Server{}).routes() {
		served[r.method+" "+r.path] = true
	}
	for _, k := range sortedKeys(served) {
		if !documented[k] {
			t.Errorf("route %s is not documented in api/openapi.yaml", k)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !served[k] {
			t.Errorf("api/openapi.yaml documents %s, which routes() does not serve", k)
		}
	}
}

// TestOpenAPIRefs checks that every $ref points at a defined component.
func TestOpenAPIRefs(t *testing.T) {
	doc := openAPIDoc(t)
	components := mapAt(t, doc, "components")
	n := 0
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"]; ok {
				n++
				s, _ := ref.(string)
				parts := strings.Split(s, "/")
				if len(parts) != 4 || parts[0] != "#" || parts[1] != "components" {
					t.Errorf("%s: $ref %q is not of the form #/components/<section>/<name>", where, s)
				} else if sec, _ := components[parts[2]].(map[string]any); sec == nil || sec[parts[3]] == nil {
					t.Errorf("%s: $ref %q points at no defined component", where, s)
				}
			}
			for k, x := range v {
				walk(x, where+"."+k)
			}
		case []any:
			for i, x := range v {
				walk(x, where+"["+strconv.Itoa(i)+"]")
			}
		}
	}
	walk(doc, "")
	if n == 0 {
		t.Error("api/openapi.yaml has no $ref at all")
	}
}

// openAPITypes names every type of package api that openapi.yaml documents as a
// component schema of the same name. Add a type here when adding it to api.
var openAPITypes = map[string]any{
	"Error":       api.Error{},
	"HostInfo":    api.HostInfo{},
	"Firmware":    api.Firmware{},
	"Disk":        api.Disk{},
	"VM":          api.VM{},
	"VMCreate":    api.VMCreate{},
	"VMUpdate":    api.VMUpdate{},
	"VMStatePut":  api.VMStatePut{},
	"ExecRequest": api.ExecRequest{},
	"ExecResult":  api.ExecResult{},
	"Operation":   api.Operation{},
	"Progress":    api.Progress{},
	"Event":       api.Event{},
	"DiskCreate":  api.DiskCreate{},
	"DiskResize":  api.DiskResize{},
	"DiskConvert": api.DiskConvert{},
	"DiskInfo":    api.DiskInfo{},

	"DynamicMemory":       api.DynamicMemory{},
	"DynamicMemoryUpdate": api.DynamicMemoryUpdate{},
	"NIC":                 api.NIC{},
	"GuestInfo":           api.GuestInfo{},
	"GuestInterface":      api.GuestInterface{},
	"IntegrationService":  api.IntegrationService{},
	"IntegrationUpdate":   api.IntegrationUpdate{},
	"KVPPut":              api.KVPPut{},
	"TimeSyncResult":      api.TimeSyncResult{},
	"FreezeRequest":       api.FreezeRequest{},
	"FreezeStatus":        api.FreezeStatus{},
	"FileInfo":            api.FileInfo{},
	"NICAdd":              api.NICAdd{},
	"DiskAdd":             api.DiskAdd{},
	"Switch":              api.Switch{},
	"SwitchCreate":        api.SwitchCreate{},
	"Checkpoint":          api.Checkpoint{},
	"CheckpointCreate":    api.CheckpointCreate{},
	"CheckpointApply":     api.CheckpointApply{},
	"CheckpointRename":    api.CheckpointRename{},
	"VMExport":            api.VMExport{},
	"VMImport":            api.VMImport{},
	"BackupCreate":        api.BackupCreate{},
	"Backup":              api.Backup{},
	"BackupDisk":          api.BackupDisk{},
	"BackupFile":          api.BackupFile{},
	"VMMove":              api.VMMove{},
	"MoveResult":          api.MoveResult{},
	"MoveStorageResult":   api.MoveStorageResult{},
	"VMMoveStorage":       api.VMMoveStorage{},
	"StorageLocation":     api.StorageLocation{},
	"MigrationCreate":     api.MigrationCreate{},
	"MigrationFile":       api.MigrationFile{},
	"MigrationTop":        api.MigrationTop{},
	"Migration":           api.Migration{},
	"MigrationCommit":     api.MigrationCommit{},
	"Extent":              api.Extent{},
	"ReferencePoint":      api.ReferencePoint{},
	"ChangeTracking":      api.ChangeTracking{},
	"TrackedDisk":         api.TrackedDisk{},
	"TrustedCertificate":  api.TrustedCertificate{},
	"TokenCreate":         api.TokenCreate{},
	"Token":               api.Token{},
	"EnrollRequest":       api.EnrollRequest{},
	"Peer":                api.Peer{},
	"PeerAdd":             api.PeerAdd{},
}

// openAPIEnums are component schemas for string enums, which have no Go struct.
var openAPIEnums = map[string][]string{
	"VMState": {api.StateOff, api.StateStarting, api.StateRunning, api.StatePaused,
		api.StateSaving, api.StateSaved, api.StateStopping, api.StatePausedCritical},
	"Heartbeat":       {api.HeartbeatOK, api.HeartbeatNoContact, api.HeartbeatLostCommunication, api.HeartbeatDisabled},
	"VMAction":        {api.ActionStart, api.ActionStop, api.ActionKill, api.ActionPause, api.ActionResume, api.ActionSave},
	"OperationStatus": {api.OpPending, api.OpRunning, api.OpSuccess, api.OpFailure, api.OpCancelled},
	"ServiceName": {api.ServiceHeartbeat, api.ServiceShutdown, api.ServiceTimeSync, api.ServiceDataExchange,
		api.ServiceGuestServices, api.ServiceDirectSession, api.ServiceBackup},
	"SwitchType": {api.SwitchExternal, api.SwitchInternal, api.SwitchPrivate},
	// A VM's setting, and what a checkpoint is once taken.
	"CheckpointSetting": {api.CheckpointProduction, api.CheckpointProductionOnly, api.CheckpointStandard, api.CheckpointDisabled},
	"CheckpointType":    {api.CheckpointProduction, api.CheckpointStandard},
	"ImportMode":        {api.ImportCopy, api.ImportRegister},
	// BackupCreate.Consistency, Backup.Consistency, ReferencePoint.Consistency.
	"Consistency": {api.ConsistencyApplication, api.ConsistencyCrash},
	"Role":        api.Roles,
}

// TestOpenAPISchemas checks that each component schema's properties are exactly
// the JSON fields of the Go type of the same name, both ways.
func TestOpenAPISchemas(t *testing.T) {
	doc := openAPIDoc(t)
	schemas := mapAt(t, doc, "components", "schemas")

	for name := range openAPITypes {
		if _, ok := schemas[name]; !ok {
			t.Errorf("api.%s has no schema in components.schemas", name)
		}
	}
	for name := range openAPIEnums {
		if _, ok := schemas[name]; !ok {
			t.Errorf("enum %s has no schema in components.schemas", name)
		}
	}

	for _, name := range sortedKeys(schemas) {
		schema, _ := schemas[name].(map[string]any)
		if d, _ := schema["description"].(string); d == "" {
			t.Errorf("components.schemas.%s: no description", name)
		}
		if want, ok := openAPIEnums[name]; ok {
			got := stringList(schema["enum"])
			if !sameSet(got, want) {
				t.Errorf("components.schemas.%s: enum %v, want %v", name, got, want)
			}
			continue
		}
		zero, ok := openAPITypes[name]
		if !ok {
			t.Errorf("components.schemas.%s matches no type of package api (list it in openAPITypes or openAPIEnums)", name)
			continue
		}
		props, _ := schema["properties"].(map[string]any)
		fields := jsonFields(reflect.TypeOf(zero))
		for _, f := range sortedKeys(fields) {
			if _, ok := props[f]; !ok {
				t.Errorf("components.schemas.%s: no property %q (field of api.%s)", name, f, name)
			}
		}
		for _, p := range sortedKeys(props) {
			if !fields[p] {
				t.Errorf("components.schemas.%s: property %q is no JSON field of api.%s", name, p, name)
			}
		}
		for _, r := range stringList(schema["required"]) {
			if _, ok := props[r]; !ok {
				t.Errorf("components.schemas.%s: required %q is not a property", name, r)
			}
		}
	}
}

// jsonFields returns the JSON names of a struct's fields, as encoding/json sees them.
func jsonFields(typ reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k := range jsonFields(ft) {
					out[k] = true
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

func stringList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIBodyTooLarge checks that every operation taking a JSON body
// documents the 413 that decode answers for one over its limit.
func TestOpenAPIBodyTooLarge(t *testing.T) {
	doc := openAPIDoc(t)
	n := 0
	for path, item := range mapAt(t, doc, "paths") {
		ops, _ := item.(map[string]any)
		for method, op := range ops {
			o, _ := op.(map[string]any)
			body, _ := o["requestBody"].(map[string]any)
			content, _ := body["content"].(map[string]any)
			if !openAPIMethods[method] || content["application/json"] == nil {
				continue
			}
			n++
			responses, _ := o["responses"].(map[string]any)
			if responses["413"] == nil {
				t.Errorf("%s %s takes a JSON body but documents no 413 answer", strings.ToUpper(method), path)
			}
		}
	}
	if n == 0 {
		t.Fatal("api/openapi.yaml documents no JSON request body at all")
	}
}
