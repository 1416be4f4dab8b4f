package httpapi

import (
	"io"
	"net/http"
	"time"
)

// Request bodies. A JSON body is read whole into memory, so its size is
// bounded: maxBody, or a route's own limit (withBodyLimit); and it must
// arrive with the headers within Timeouts.Read (http.Server's ReadTimeout).
// A route that streams its body (streamedBody) takes any size and any time,
// as long as each read makes progress within Timeouts.Read.
const (
	// maxBody bounds a JSON body; no API body but exec's is anywhere near it.
	maxBody = 1 << 20
	// maxExecBody fits what hv vm exec sends: up to 16 MiB of standard input,
	// as base64 (4/3 larger), and the command.
	maxExecBody = 24 << 20
)

// requestBody is a request's body as handlers see it: ServeHTTP installs
// it, and a route's wrapper may change its policy before the handler reads.
type requestBody struct {
	raw     io.ReadCloser
	w       http.ResponseWriter // the server's own: MaxBytesReader tells it to close the connection
	rc      *http.ResponseController
	timeout time.Duration
	limit   int64
	stream  bool
	r       io.Reader // what Read reads, chosen at the first Read
}

func newRequestBody(w http.ResponseWriter, rc *http.ResponseController, raw io.ReadCloser, timeout time.Duration) *requestBody {
	return &requestBody{raw: raw, w: w, rc: rc, timeout: timeout, limit: maxBody}
}

// Read reads the body. Once it has all been read, net/http clears the read
// deadline itself (it reads ahead to notice a client that goes away), so a
// call that works long after reading its body is not cut.
func (b *requestBody) Read(p []byte) (int, error) {
	if b.r == nil {
		b.r = b.raw
		if !b.stream {
			b.r = http.MaxBytesReader(b.w, b.raw, b.limit)
		}
	}
	if b.stream {
		b.extend()
	}
	return b.r.Read(p)
}

// extend gives a streamed body's next read its deadline.
func (b *requestBody) extend() {
	if b.timeout > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
}

func (b *requestBody) Close() error { return b.raw.Close() }

// bodyLimit is the most a JSON body of r may hold.
func bodyLimit(r *http.Request) int64 {
	if b, ok := r.Body.(*requestBody); ok {
		return b.limit
	}
	return maxBody
}

// withBodyLimit gives a route a JSON body limit of its own.
func withBodyLimit(limit int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Body.(*requestBody); ok {
			b.limit = limit
		}
		h(w, r)
	}
}

// streamedBody marks a route whose handler streams its body (a file for the
// guest) rather than reading it into memory: it may be of any size and take
// any time, as long as it keeps moving.
func streamedBody(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Body.(*requestBody); ok {
			b.stream = true
			b.extend() // lift the whole request's deadline (ReadTimeout)
		}
		h(w, r)
	}
}
