package attach

import (
	"math/rand/v2"
	"time"
)

// Backoff yields capped exponential delays with jitter: attempt n waits a random time in [d/2, d] where
// d = min(Min * 2^n, Max). The jitter keeps wrappers of one TaskManager from reconnecting in lockstep after the
// recycler restarts. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0, 1); nil means math/rand.
	Rand func() float64

	attempt int
}

// Next returns the delay before the next attempt and advances the sequence.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	b.attempt++
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

// Reset starts the sequence again from Min.
func (b *Backoff) Reset() { b.attempt = 0 }
