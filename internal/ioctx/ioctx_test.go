package ioctx

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestCancelUnblocksRead(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	release := Watch(ctx, a.SetDeadline)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := a.Read(make([]byte, 1))
	release()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after cancel: %v", err)
	}
}

func TestDeadlineApplied(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	release := Watch(ctx, a.SetDeadline)
	defer release()
	start := time.Now()
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("read with a deadline: %v after %s", err, time.Since(start))
	}
}
