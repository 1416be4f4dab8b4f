// Package ratelimit bounds how often each key (a client's address) may do
// something: a token bucket per key, in a table of bounded size, so that
// many addresses cannot grow it without end.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter allows each key Burst events at once and one more every Every.
// The zero value is not usable; use New.
type Limiter struct {
	mu      sync.Mutex
	every   time.Duration
	burst   float64
	maxKeys int
	now     func() time.Time
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New returns a limiter of burst events per key, refilled one every every,
// keeping at most maxKeys keys (past that, a full bucket is forgotten
// first, and if none is full every key shares one).
func New(burst int, every time.Duration, maxKeys int, now func() time.Time) *Limiter {
	return &Limiter{every: every, burst: float64(burst), maxKeys: maxKeys, now: now, buckets: map[string]*bucket{}}
}

// Allow takes one event from key's bucket, and says whether there was one.
func (l *Limiter) Allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys && !l.forgetFull(now) {
			key = "" // the table is full of busy keys: they share one bucket
			if b, ok = l.buckets[key]; !ok {
				b = &bucket{tokens: l.burst, at: now}
			}
		} else {
			b = &bucket{tokens: l.burst, at: now}
		}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.every))
		b.at = now
	}
}

// forgetFull drops the buckets that have refilled (their keys are as if
// new), and says whether that made room.
func (l *Limiter) forgetFull(now time.Time) bool {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets) < l.maxKeys
}
