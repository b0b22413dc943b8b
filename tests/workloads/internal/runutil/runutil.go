// Package runutil holds the small pieces every workload shares: a run
// deadline that also ends on SIGTERM/SIGINT.
package runutil

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Context returns a context that is cancelled after d (if d > 0) or when the
// process receives SIGTERM or SIGINT, whichever comes first.
func Context(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if d > 0 {
		ctx2, cancel2 := context.WithTimeout(ctx, d)
		return ctx2, func() { cancel2(); cancel() }
	}
	return ctx, cancel
}
