package attach

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{"no jitter draw: half of each step", 0, []time.Duration{50, 100, 200, 400, 500, 500}},
		{"max jitter draw: the full step", 0.999999, []time.Duration{99, 199, 399, 799, 999, 999}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return tt.rand }}
			for i, w := range tt.want {
				if got := b.Next().Truncate(time.Millisecond); got != w*time.Millisecond {
					t.Errorf("attempt %d: %v, want %v", i, got, w*time.Millisecond)
				}
			}
			b.Reset()
			if got := b.Next().Truncate(time.Millisecond); got != tt.want[0]*time.Millisecond {
				t.Errorf("after Reset: %v, want %v", got, tt.want[0]*time.Millisecond)
			}
		})
	}
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for i := 0; i < 1000; i++ {
		if d := b.Next(); d < 50*time.Millisecond || d > 5*time.Second {
			t.Fatalf("attempt %d: %v outside [50ms, 5s]", i, d)
		}
	}
}
