package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(append([]byte(nil), b...)) }

func (s *Server) listOps(w http.ResponseWriter, r *http.Request) {
	ops := s.ops.List()
	for i := range ops {
		ops[i] = visibleOp(r.Context(), ops[i])
	}
	writeJSON(w, http.StatusOK, ops)
}

// visibleOp hides an operation's result from a read-only client: results
// hold what admins asked for (an exec's output, a backup's sockets).
func visibleOp(ctx context.Context, op api.Operation) api.Operation {
	if readOnlyCaller(ctx) {
		op.Result = nil
	}
	return op
}

// maxWait bounds ?wait= so a connection is never held forever; clients loop.
const maxWait = 5 * time.Minute

func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, serr := strconv.Atoi(v)
		if serr != nil {
			return 0, fmt.Errorf("wait: %q is not a duration; use e.g. 30s: %w", v, errdefs.ErrInvalid)
		}
		d = time.Duration(secs) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait: %q is negative: %w", v, errdefs.ErrInvalid)
	}
	return min(d, maxWait), nil
}

func (s *Server) getOp(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		writeError(w, err)
		return
	}
	op, err := s.ops.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		select {
		case <-op.Done():
		case <-ctx.Done():
		}
	}
	writeJSON(w, http.StatusOK, visibleOp(r.Context(), op.Snapshot()))
}

func (s *Server) cancelOp(w http.ResponseWriter, r *http.Request) {
	op, err := s.ops.Cancel(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

// events streams newline-delimited JSON events until the client goes away.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	var types []string
	if t := r.URL.Query().Get("type"); t != "" {
		for _, x := range strings.Split(t, ",") {
			switch x {
			case "vm", "operation", "log":
				types = append(types, x)
			default:
				writeError(w, fmt.Errorf("type: %q is not an event type; use vm, operation or log: %w", x, errdefs.ErrInvalid))
				return
			}
		}
	}
	ch, cancel := s.bus.Subscribe(types...)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if op, ok := ev.Metadata.(api.Operation); ok {
				ev.Metadata = visibleOp(r.Context(), op)
			}
			if err := enc.Encode(ev); err != nil {
				return
			}
		case <-keepalive.C:
			if err := enc.Encode(api.Event{Type: "log", Time: time.Now().UTC(), Action: "keepalive"}); err != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
