package qga

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hvproject/hv/internal/textsafe"
)

// sentinel is the byte that precedes a guest-sync-delimited answer, and that
// we send so the agent's JSON parser drops any half-read request.
const sentinel = 0xFF

// errLineTooLong is wrapped by the error of an answer over its command's limit.
var errLineTooLong = errors.New("answer too long")

func lineTooLong(limit int) error {
	return fmt.Errorf("%w: over %s, the most hv reads for this command; skipped it (is the guest agent misbehaving?)", errLineTooLong, sizeText(limit))
}

// readLine returns the next line without its line ending, reusing buf. A line
// over limit bytes is consumed without being kept (buf never grows past
// limit, so a hostile agent cannot make us hold more) and reported as an
// error wrapping errLineTooLong.
func readLine(r *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	buf = buf[:0]
	tooLong := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) > limit {
			tooLong, buf = true, buf[:0]
		}
		if !tooLong {
			if need := len(buf) + len(chunk); need > cap(buf) {
				// Grow as append would, but never past limit.
				nb := make([]byte, len(buf), min(max(2*cap(buf), need), limit))
				copy(nb, buf)
				buf = nb
			}
			buf = append(buf, chunk...)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return nil, err
		case tooLong:
			return nil, lineTooLong(limit)
		}
		return bytes.TrimRight(buf, "\r\n"), nil
	}
}

// answer is one decoded reply from the agent.
type answer struct {
	ret json.RawMessage
	err *Error
}

// decodeLine parses one line. synced reports a sentinel in the line: what
// follows the last one is a guest-sync-delimited answer, so anything before
// it is stale. A line that is blank after that is ok with a zero answer.
func decodeLine(line []byte) (a answer, synced, blank bool, err error) {
	if i := bytes.LastIndexByte(line, sentinel); i >= 0 {
		line, synced = line[i+1:], true
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return answer{}, synced, true, nil
	}
	var w struct {
		Return json.RawMessage `json:"return"`
		Error  *Error          `json:"error"`
	}
	if err := json.Unmarshal(line, &w); err != nil {
		return answer{}, synced, false, errGarbage
	}
	if (w.Return == nil) == (w.Error == nil) {
		return answer{}, synced, false, errGarbage
	}
	if e := w.Error; e != nil {
		e.Class, e.Desc = textsafe.Line(e.Class, maxErrorText), textsafe.Line(e.Desc, maxErrorText)
	}
	return answer{ret: w.Return, err: w.Error}, synced, false, nil
}

// marshalRequest builds one command line; args nil means no "arguments".
func marshalRequest(command string, args any) ([]byte, error) {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
