package testenv

import "testing"

func TestRedisStopStartSamePort(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	addr := r.Addr()
	steps := []struct {
		name   string
		do     func()
		wantUp bool
	}{
		{"started", func() {}, true},
		{"stopped", r.Stop, false},
		{"stop twice", r.Stop, false},
		{"started again", r.Start, true},
		{"restarted", r.Restart, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			if r.Addr() != addr {
				t.Fatalf("address moved from %s to %s", addr, r.Addr())
			}
			if err := pingRedis(addr); (err == nil) != s.wantUp {
				t.Fatalf("PING %s: %v, want up=%v", addr, err, s.wantUp)
			}
		})
	}
}
