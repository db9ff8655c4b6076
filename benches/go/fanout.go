// Go's side of examples/fanout.rs: 200 goroutines each compute 5 x 1 ms
// with runtime.Gosched() between the slices, on GOMAXPROCS=2.
//
// "fresh": all started at once. "started-on-one": all started from one
// goroutine while another keeps the second P busy, then released together
// (Go moves running goroutines between Ps, so this matches "fresh").
//
//	go run benches/go/fanout.go
//
// Prints "<case> <elapsed ms>" per case.
package main

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const goroutines = 200
const slices = 5
const slice = time.Millisecond

func compute(d time.Duration) {
	start := time.Now()
	for time.Since(start) < d {
	}
}

func work() {
	for i := 0; i < slices; i++ {
		compute(slice)
		runtime.Gosched()
	}
}

func fresh() time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); work() }()
	}
	wg.Wait()
	return time.Since(start)
}

func startedOnOne() time.Duration {
	var wg sync.WaitGroup
	var started, release int32
	var blocker sync.WaitGroup
	blocker.Add(1)
	go func() {
		defer blocker.Done()
		for atomic.LoadInt32(&started) < goroutines {
		}
	}()
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atomic.AddInt32(&started, 1)
			for atomic.LoadInt32(&release) == 0 {
				runtime.Gosched()
			}
			work()
		}()
	}
	blocker.Wait()
	start := time.Now()
	atomic.StoreInt32(&release, 1)
	wg.Wait()
	return time.Since(start)
}

func main() {
	runtime.GOMAXPROCS(2)
	fmt.Printf("fresh %.1f\n", float64(fresh().Microseconds())/1000)
	fmt.Printf("started-on-one %.1f\n", float64(startedOnOne().Microseconds())/1000)
}
