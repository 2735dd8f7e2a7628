package main

import (
	"os"

	_ "github.com/nuse-project/nuse/uc/link" // netdev kind "uc"
	"github.com/nuse-project/nuse/uc/perftest"
)

// The UC channel's benchmarks (perftest's ib_write_lat / ib_write_bw over
// uc). The verbs backend is linked in only when built with -tags verbs.
func init() {
	registerPerf("uc-write-lat", "RDMA WRITE latency over a UC QP (ib_write_lat -c UC)", func(args []string) int {
		return perftest.Run("lat", args, os.Stdout, os.Stderr)
	})
	registerPerf("uc-write-bw", "RDMA WRITE bandwidth and message rate over a UC QP (ib_write_bw -c UC)", func(args []string) int {
		return perftest.Run("bw", args, os.Stdout, os.Stderr)
	})
}
