// Go's side of the many-coroutine rows of examples/switch_cost: the cost of
// runtime.Gosched() with N runnable goroutines on one P (GOMAXPROCS=1),
// every goroutine yielding in turn. Median of 9 batches of about 20 ms.
//
//	go run benches/go/yield.go 2 100 10000 30000
//
// Prints "<N> <ns per yield>" per N given.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func yieldWith(runnable int) float64 {
	var stop int32
	var started int32
	var wg sync.WaitGroup
	for i := 1; i < runnable; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atomic.AddInt32(&started, 1)
			for atomic.LoadInt32(&stop) == 0 {
				runtime.Gosched()
			}
		}()
	}
	for atomic.LoadInt32(&started) < int32(runnable-1) {
		runtime.Gosched()
	}
	round := func(rounds int) float64 {
		start := time.Now()
		for i := 0; i < rounds; i++ {
			runtime.Gosched()
		}
		return float64(time.Since(start).Nanoseconds()) / float64(rounds*runnable)
	}
	round(2)
	perRound := round(3) * float64(runnable)
	rounds := int(20e6 / perRound)
	if rounds < 2 {
		rounds = 2
	}
	samples := make([]float64, 9)
	for i := range samples {
		samples[i] = round(rounds)
	}
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	sort.Float64s(samples)
	return samples[len(samples)/2]
}

func main() {
	runtime.GOMAXPROCS(1)
	for _, arg := range os.Args[1:] {
		n, err := strconv.Atoi(arg)
		if err != nil || n < 2 {
			fmt.Fprintf(os.Stderr, "bad N %q\n", arg)
			os.Exit(2)
		}
		fmt.Printf("%d %.1f\n", n, yieldWith(n))
	}
}
