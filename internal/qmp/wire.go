package qmp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// maxLine bounds one message so a broken peer cannot make us buffer without
// limit; QEMU's largest answers (query-qmp-schema) are well under 1 MiB.
const maxLine = 16 << 20

var errLineTooLong = fmt.Errorf("QEMU sent a message longer than %d MiB", maxLine>>20)

// readLine returns the next line without its line ending, reusing buf. The
// result is valid until the next call.
func readLine(r *bufio.Reader, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > maxLine {
			return nil, errLineTooLong
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return bytes.TrimRight(buf, "\r\n"), nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return nil, err
		}
	}
}

type msgKind int

const (
	kindGreeting msgKind = iota + 1
	kindAnswer
	kindEvent
)

// message is one decoded line from QEMU.
type message struct {
	kind     msgKind
	greeting Version
	id       string          // answers: our id, "" when QEMU sent none
	ret      json.RawMessage // answers: "return"
	err      *Error          // answers: "error"
	event    Event
}

type wireMessage struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     *string         `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// decodeMessage turns one line into a greeting, an answer or an event.
func decodeMessage(line []byte) (message, error) {
	var w wireMessage
	if err := json.Unmarshal(line, &w); err != nil {
		return message{}, fmt.Errorf("not a JSON object: %w", err)
	}
	var m message
	n := 0
	if w.QMP != nil {
		n++
		v := w.QMP.Version
		m.kind = kindGreeting
		m.greeting = Version{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
	}
	if w.Return != nil || w.Error != nil {
		n++
		m.kind = kindAnswer
		m.ret, m.err = w.Return, w.Error
		if w.Return != nil && w.Error != nil {
			return message{}, errors.New("answer has both return and error")
		}
		// Our ids are strings; anything else is not ours and stays "".
		if w.ID != nil {
			_ = json.Unmarshal(w.ID, &m.id)
		}
	}
	if w.Event != nil {
		n++
		if *w.Event == "" {
			return message{}, errors.New("event without a name")
		}
		m.kind = kindEvent
		m.event = Event{Name: *w.Event, Data: w.Data}
		// QEMU sends -1/-1 when it could not read the clock.
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 {
			m.event.Timestamp = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
	}
	if n != 1 {
		return message{}, errors.New("not a greeting, answer or event")
	}
	return m, nil
}
