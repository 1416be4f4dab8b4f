package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/hvproject/hv/api"
)

// Events streams hvd's events of the given types (all when empty) to fn until ctx is done,
// the stream ends, or fn returns an error, which Events then returns. When ctx ends the
// stream it returns ctx.Err().
func (c *Client) Events(ctx context.Context, types []string, fn func(api.Event) error) error {
	r := request{method: http.MethodGet, path: "/events"}
	if len(types) > 0 {
		r.query = url.Values{"type": {strings.Join(types, ",")}}
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Lines are read whole, whatever their length: a Scanner would stop at its buffer size.
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadBytes('\n')
		if line = bytes.TrimSpace(line); len(line) > 0 {
			var ev api.Event
			if jerr := json.Unmarshal(line, &ev); jerr != nil {
				return fmt.Errorf("event stream: %w", jerr)
			}
			if ferr := fn(ev); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("event stream: %w", err)
		}
	}
}
