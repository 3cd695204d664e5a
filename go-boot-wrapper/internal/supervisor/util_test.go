package supervisor

import (
	"context"
	"errors"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// untrackedChildren lists this process's children that are not running workers: orphans re-parented to us.
func (s *Supervisor) untrackedChildren() ([]ProcInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kids, err := s.sys.Children(s.sys.Getpid())
	if err != nil {
		return nil, err
	}
	out := kids[:0]
	for _, k := range kids {
		if !s.tracked[k.Pid] {
			out = append(out, k)
		}
	}
	return out, nil
}
