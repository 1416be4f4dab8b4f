package events

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

func TestFilterAndFanOut(t *testing.T) {
	b := NewBus(slog.New(slog.NewTextHandler(io.Discard, nil)))
	all, cancelAll := b.Subscribe()
	defer cancelAll()
	vms, cancelVMs := b.Subscribe("vm")
	defer cancelVMs()

	b.Publish(api.Event{Type: "operation", Action: "created"})
	b.Publish(api.Event{Type: "vm", Action: "state-changed"})

	if ev := <-all; ev.Type != "operation" || ev.Time.IsZero() {
		t.Fatalf("first event to the unfiltered subscriber = %+v", ev)
	}
	if ev := <-all; ev.Type != "vm" {
		t.Fatalf("second event = %+v", ev)
	}
	select {
	case ev := <-vms:
		if ev.Type != "vm" {
			t.Fatalf("filtered subscriber got %+v", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("filtered subscriber got nothing")
	}
	select {
	case ev := <-vms:
		t.Fatalf("filtered subscriber got an extra event %+v", ev)
	default:
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	b := NewBus(slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, cancel := b.Subscribe()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			b.Publish(api.Event{Type: "vm"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a subscriber that never reads")
	}
	cancel()
	cancel() // idempotent
}
