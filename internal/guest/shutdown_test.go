package guest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func refuses(name string) Way {
	return Way{Name: name, Ask: func(context.Context) error { return errors.New(name + " refused") }}
}

// takes is a way the guest takes: it powers off after delay (never if < 0).
func takes(name string, exited chan struct{}, delay time.Duration) Way {
	return Way{Name: name, Ask: func(context.Context) error {
		if delay >= 0 {
			time.AfterFunc(delay, func() { close(exited) })
		}
		return nil
	}}
}

func TestAskShutdown(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	// Refusals are passed over at once; the way taken is the answer.
	exited := make(chan struct{})
	var stages []string
	a := Asking{VM: "web", Ways: []Way{refuses("agent"), takes("power button", exited, 50*time.Millisecond)},
		Exited: exited, Stage: func(s string) { stages = append(stages, s) }, Log: log}
	start := time.Now()
	if way, err := AskShutdown(ctx, a, 5*time.Second); err != nil || way != "power button" || time.Since(start) > 2*time.Second {
		t.Errorf("way %q, err %v after %s", way, err, time.Since(start))
	}
	if len(stages) != 2 || !strings.HasSuffix(stages[1], "power button") {
		t.Errorf("stages %q", stages)
	}

	// Every way refused: the error names each.
	a = Asking{VM: "web", Ways: []Way{refuses("agent"), refuses("power button")}, Exited: make(chan struct{}), Log: log}
	if _, err := AskShutdown(ctx, a, time.Second); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "agent refused; power button: power button refused") {
		t.Errorf("all refused: %v", err)
	}

	// A way taken that the guest ignores is followed by the next one before
	// the time is up; if none works, a timeout says what was tried.
	exited = make(chan struct{})
	a = Asking{VM: "web", Ways: []Way{takes("agent", exited, -1), takes("power button", exited, 20*time.Millisecond)}, Exited: exited, Log: log}
	if way, err := AskShutdown(ctx, a, 400*time.Millisecond); err != nil || way != "power button" {
		t.Errorf("second way: %q %v", way, err)
	}
	a = Asking{VM: "web", Ways: []Way{takes("agent", make(chan struct{}), -1)}, Exited: make(chan struct{}), Log: log}
	if _, err := AskShutdown(ctx, a, 100*time.Millisecond); !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "did not shut down within 100ms after agent") {
		t.Errorf("ignored: %v", err)
	}
}
