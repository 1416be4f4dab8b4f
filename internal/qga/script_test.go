package qga

import (
	"fmt"
	"sync"
)

// script is a fake agent that answers from a table and records each
// request (syncs left out) as the line the client sent.
type script struct {
	mu      sync.Mutex
	lines   []string
	answers map[string]func(args string) string // command -> answer line
}

func newScript() *script { return &script{answers: map[string]func(string) string{}} }

// on sets the answer for command to a fixed line.
func (s *script) on(command, answer string) *script {
	s.answers[command] = func(string) string { return answer + "\n" }
	return s
}

func (s *script) handle(a *fakeAgent, r fakeReq) string {
	if r.Execute == "guest-sync-delimited" {
		return syncReply(r)
	}
	line := fmt.Sprintf(`{"execute":%q}`, r.Execute)
	if r.Arguments != nil {
		line = fmt.Sprintf(`{"execute":%q,"arguments":%s}`, r.Execute, r.Arguments)
	}
	s.mu.Lock()
	s.lines = append(s.lines, line)
	f := s.answers[r.Execute]
	s.mu.Unlock()
	if f == nil {
		return fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`+"\n", r.Execute)
	}
	return f(string(r.Arguments))
}

func (s *script) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}
