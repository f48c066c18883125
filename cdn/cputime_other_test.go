//go:build !unix

package cdn

import "time"

func processCPU() time.Duration { return 0 }
