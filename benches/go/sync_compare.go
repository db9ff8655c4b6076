// Go's side of fibra's sync comparison (examples/sync_compare.rs runs the
// same workloads on fibra; benches/go/sync_compare.sh runs both, alternating,
// and prints the ratios):
//
//   - mutex: 1,000 goroutines x 1,000 increments of one counter under a
//     sync.Mutex, GOMAXPROCS=2, runtime.Gosched() after every 100th
//     increment; ns per increment, spawning and waiting included;
//   - ping-pong: a value sent to a goroutine over a channel and answered
//     over another, GOMAXPROCS=1; ns per round trip. With a buffer of one
//     (like fibra's mpsc::channel, a send never waits) and unbuffered (a
//     rendezvous, like sync_channel(0)).
//
// Each prints the median of -runs runs, in the line format the script reads.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

func mutexContended(goroutines, increments, yieldEvery int) time.Duration {
	var mu sync.Mutex
	var counter uint64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < increments; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
				if i%yieldEvery == yieldEvery-1 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if counter != uint64(goroutines*increments) {
		panic(fmt.Sprintf("counted %d", counter))
	}
	return elapsed
}

func pingPong(rounds, buffer int) time.Duration {
	there := make(chan uint64, buffer)
	back := make(chan uint64, buffer)
	go func() {
		for v := range there {
			back <- v + 1
		}
	}()
	start := time.Now()
	for i := 0; i < rounds; i++ {
		there <- uint64(i)
		if <-back != uint64(i)+1 {
			panic("wrong answer")
		}
	}
	elapsed := time.Since(start)
	close(there)
	return elapsed
}

func median(samples []float64) float64 {
	sort.Float64s(samples)
	return samples[len(samples)/2]
}

func main() {
	runs := flag.Int("runs", 9, "runs per workload (the median is printed)")
	flag.Parse()

	runtime.GOMAXPROCS(2)
	var mutex []float64
	for r := 0; r < *runs; r++ {
		elapsed := mutexContended(1000, 1000, 100)
		mutex = append(mutex, float64(elapsed.Nanoseconds())/1e6)
	}
	fmt.Printf("mutex_contended_ns_per_increment %.1f\n", median(mutex))

	runtime.GOMAXPROCS(1)
	const rounds = 200000
	for _, kind := range []struct {
		name   string
		buffer int
	}{{"channel_ping_pong_ns", 1}, {"rendezvous_ping_pong_ns", 0}} {
		var pp []float64
		for r := 0; r < *runs; r++ {
			elapsed := pingPong(rounds, kind.buffer)
			pp = append(pp, float64(elapsed.Nanoseconds())/rounds)
		}
		fmt.Printf("%s %.1f\n", kind.name, median(pp))
	}
}
