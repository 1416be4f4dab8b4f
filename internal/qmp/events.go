package qmp

import (
	"encoding/json"
	"sync"
	"time"
)

// Event is one asynchronous QMP event.
type Event struct {
	Name      string
	Data      json.RawMessage // nil when the event has no data
	Timestamp time.Time       // zero when QEMU could not read its clock
}

// eventBacklog bounds what one subscriber may leave unread. QEMU emits few
// events, so a subscriber this far behind is not reading at all; its oldest
// events are dropped (see DroppedEvents) rather than letting memory grow or
// stalling the connection's reader.
const eventBacklog = 4096

// Events returns the default subscription, opened at Dial so it sees every
// event from the start. The channel is closed once the connection has ended
// and the remaining events were received, or at Close.
func (c *Client) Events() <-chan Event { return c.events }

// Subscribe opens another subscription that receives every event from now
// on, in order. Call cancel when done with it; it closes the channel. The
// channel is also closed after the connection ends and its backlog was
// received, and at Close.
func (c *Client) Subscribe() (events <-chan Event, cancel func()) {
	s := &subscription{
		out:  make(chan Event),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	c.mu.Lock()
	if c.ended {
		s.finished = true
	} else {
		c.subs[s] = struct{}{}
	}
	c.mu.Unlock()
	go s.pump()
	return s.out, func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
		s.cancel()
	}
}

// DroppedEvents counts events dropped, over all subscriptions, because a
// subscriber left eventBacklog events unread.
func (c *Client) DroppedEvents() uint64 { return c.dropped.Load() }

func (c *Client) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if s.push(ev) {
			c.dropped.Add(1)
		}
	}
}

// subscription is an event queue drained into out by its own goroutine, so
// publishing never blocks.
type subscription struct {
	out  chan Event
	wake chan struct{} // a push or finish happened
	stop chan struct{} // closed by cancel

	stopOnce sync.Once

	mu       sync.Mutex
	queue    []Event
	finished bool // no more pushes; close out once the queue is drained
}

// push queues ev and reports whether it had to drop the oldest event.
func (s *subscription) push(ev Event) (dropped bool) {
	s.mu.Lock()
	if len(s.queue) >= eventBacklog {
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		dropped = true
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	s.poke()
	return dropped
}

func (s *subscription) finish() {
	s.mu.Lock()
	s.finished = true
	s.mu.Unlock()
	s.poke()
}

func (s *subscription) cancel() { s.stopOnce.Do(func() { close(s.stop) }) }

func (s *subscription) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			finished := s.finished
			s.mu.Unlock()
			if finished {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				return
			}
		}
		ev := s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		select {
		case s.out <- ev:
		case <-s.stop:
			return
		}
	}
}
