// Go's side of examples/million.rs: one goroutine (GOMAXPROCS=1) starts
// 1,000,000 goroutines, each sending its index on a channel of its own
// (the join), before receiving any result; then receives them all.
//
//	go run benches/go/million.go
//
// Prints "ns_per_spawn_join <ns>" and "peak_rss_kib <KiB>" (VmHWM).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

const n = 1_000_000

func peakRSS() string {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), " kB")
		}
	}
	return "?"
}

func main() {
	runtime.GOMAXPROCS(1)
	start := time.Now()
	results := make([]chan int, n)
	for i := 0; i < n; i++ {
		results[i] = make(chan int, 1)
		go func(i int) { results[i] <- i }(i)
	}
	sum := 0
	for i := 0; i < n; i++ {
		sum += <-results[i]
	}
	elapsed := time.Since(start)
	if sum != n*(n-1)/2 {
		panic("wrong sum")
	}
	fmt.Printf("ns_per_spawn_join %.0f\n", float64(elapsed.Nanoseconds())/n)
	fmt.Printf("peak_rss_kib %s\n", peakRSS())
}
