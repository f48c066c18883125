package autoscale

import (
	"cmp"
	"slices"
)

// sortInstances orders instances by start time, then ID.
func sortInstances(s []Instance) {
	slices.SortFunc(s, func(a, b Instance) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// sortProcs orders the victims of a scale-in first: starting before ready,
// then the newest first.
func sortProcs(s []*proc) {
	slices.SortFunc(s, func(a, b *proc) int {
		if (a.state == Starting) != (b.state == Starting) {
			if a.state == Starting {
				return -1
			}
			return 1
		}
		if c := b.started.Compare(a.started); c != 0 {
			return c
		}
		return cmp.Compare(b.id, a.id)
	})
}
