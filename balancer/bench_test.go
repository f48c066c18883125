package balancer

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// benchPools yields, per algorithm and size, a pool whose backends have
// weights 1, 2, 3, 1, 2, 3, … ("ip-hash-uniform": all weight 1).
func benchPools(b *testing.B, run func(b *testing.B, p *Pool)) {
	algs := append(Algorithms(), "ip-hash-uniform")
	for _, alg := range algs {
		for _, n := range []int{3, 1000} {
			b.Run(fmt.Sprintf("%s/%d", alg, n), func(b *testing.B) {
				bs := backends(b, n)
				cfg := Config{Algorithm: alg}
				if alg == "ip-hash-uniform" {
					cfg.Algorithm = AlgorithmIPHash
				} else {
					for i, be := range bs {
						be.weight.Store(int64(1 + i%3))
					}
				}
				p, _ := testPool(b, cfg, bs)
				b.ReportAllocs()
				run(b, p)
			})
		}
	}
}

func benchClients() []netip.Addr {
	cs := make([]netip.Addr, 1024)
	for i := range cs {
		cs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	return cs
}

// BenchmarkPick measures one Pick and its Done, from one goroutine.
func BenchmarkPick(b *testing.B) {
	clients := benchClients()
	benchPools(b, func(b *testing.B, p *Pool) {
		i := 0
		for b.Loop() {
			be, err := p.Pick(clients[i&1023], nil)
			if err != nil {
				b.Fatal(err)
			}
			p.Done(be, time.Duration(1+i%5)*time.Millisecond, Success)
			i++
		}
	})
}

// BenchmarkPickParallel measures Pick and Done from GOMAXPROCS goroutines.
func BenchmarkPickParallel(b *testing.B) {
	clients := benchClients()
	benchPools(b, func(b *testing.B, p *Pool) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				be, err := p.Pick(clients[i&1023], nil)
				if err != nil {
					b.Error(err)
					return
				}
				p.Done(be, time.Duration(1+i%5)*time.Millisecond, Success)
				i++
			}
		})
	})
}
