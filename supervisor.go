package tern

import (
	"math/rand/v2"
	"time"
)

// Backoff gives the delay before reconnection attempt number attempt (1 for the first retry).
// Implementations must be safe for use by one goroutine at a time.
type Backoff interface {
	Delay(attempt int) time.Duration
}

// ExponentialBackoff doubles the delay from Min up to Max. Jitter in [0, 1] spreads each
// delay randomly by up to that fraction, so many clients cut off at once do not return at
// once.
type ExponentialBackoff struct {
	Min, Max time.Duration
	Jitter   float64
}

// Delay implements Backoff.
func (b ExponentialBackoff) Delay(attempt int) time.Duration {
	d := b.Min
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	for i := 1; i < attempt && (b.Max <= 0 || d < b.Max); i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	if j := b.Jitter; j > 0 {
		if j > 1 {
			j = 1
		}
		d = time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
	}
	return d
}

// ConstantBackoff waits the same time before every attempt.
type ConstantBackoff time.Duration

// Delay implements Backoff.
func (b ConstantBackoff) Delay(int) time.Duration { return time.Duration(b) }
