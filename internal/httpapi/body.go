package httpapi

import (
	"io"
	"net/http"
)

// Request bodies. A JSON body is read whole into memory, so its size is
// bounded: maxBody, or a route's own limit (withBodyLimit). A route that
// streams its body (streamedBody) has no size limit.
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
	raw    io.ReadCloser
	w      http.ResponseWriter // the server's own: MaxBytesReader tells it to close the connection
	limit  int64
	stream bool
	r      io.Reader // what Read reads, chosen at the first Read
}

func newRequestBody(w http.ResponseWriter, raw io.ReadCloser) *requestBody {
	return &requestBody{raw: raw, w: w, limit: maxBody}
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.r == nil {
		b.r = b.raw
		if !b.stream {
			b.r = http.MaxBytesReader(b.w, b.raw, b.limit)
		}
	}
	return b.r.Read(p)
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
// guest) rather than reading it into memory: it may be of any size.
func streamedBody(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Body.(*requestBody); ok {
			b.stream = true
		}
		h(w, r)
	}
}
