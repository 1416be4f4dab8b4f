package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBurstThenRefill(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(3, 10*time.Second, 100, c.now)
	for i := 0; i < 3; i++ {
		if !l.Allow("a") {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	if l.Allow("a") {
		t.Fatal("a fourth event at once allowed")
	}
	if !l.Allow("b") {
		t.Fatal("another key is limited by the first")
	}
	c.t = c.t.Add(9 * time.Second)
	if l.Allow("a") {
		t.Fatal("allowed before a token refilled")
	}
	c.t = c.t.Add(time.Second)
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("want exactly one event after one refill period")
	}
	c.t = c.t.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if !l.Allow("a") {
			t.Fatal("the bucket does not refill to its burst")
		}
	}
	if l.Allow("a") {
		t.Fatal("the bucket refilled past its burst")
	}
}

func TestTableStaysBounded(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(1, time.Minute, 4, c.now)
	for i := 0; i < 100; i++ {
		l.Allow(fmt.Sprint("k", i))
	}
	if len(l.buckets) > 5 { // 4 keys and the shared one
		t.Fatalf("%d buckets kept, want at most 5", len(l.buckets))
	}
	// Busy keys beyond the table share a bucket: the flood is still limited.
	if l.Allow("new1") && l.Allow("new2") {
		t.Fatal("keys beyond a full table are not limited")
	}
	c.t = c.t.Add(time.Hour)
	if !l.Allow("fresh") {
		t.Fatal("a fresh key refused after the old ones refilled")
	}
}
