// Package events fans hvd's events (state changes, operations, log lines) out to
// every listener of GET /1.0/events.
package events

import (
	"log/slog"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
)

// Bus delivers each published event to every subscriber whose filter accepts it.
// A subscriber that does not keep up loses events (counted and logged) rather than
// slowing the publisher: state changes must never wait on a slow HTTP client.
type Bus struct {
	log  *slog.Logger
	mu   sync.Mutex
	next int
	subs map[int]*sub
}

type sub struct {
	ch      chan api.Event
	types   map[string]bool // empty: all
	dropped int
}

// NewBus returns an empty bus.
func NewBus(log *slog.Logger) *Bus {
	return &Bus{log: log, subs: map[int]*sub{}}
}

// Subscribe returns a channel of events of the given types (all when none) and a
// function that ends the subscription and closes the channel.
func (b *Bus) Subscribe(types ...string) (<-chan api.Event, func()) {
	s := &sub{ch: make(chan api.Event, 256), types: map[string]bool{}}
	for _, t := range types {
		if t != "" {
			s.types[t] = true
		}
	}
	b.mu.Lock()
	id := b.next
	b.next++
	b.subs[id] = s
	b.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			b.mu.Unlock()
			close(s.ch)
		})
	}
}

// Publish sends ev to every interested subscriber without blocking.
func (b *Bus) Publish(ev api.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		if len(s.types) > 0 && !s.types[ev.Type] {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped++
			if s.dropped == 1 || s.dropped%100 == 0 {
				b.log.Warn("event subscriber too slow; dropping events", "dropped", s.dropped)
			}
		}
	}
}
