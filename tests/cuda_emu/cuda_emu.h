// Host emulation of the CUDA subset gram.cu uses, so that the real kernels run on the CPU
// (tests/cuda_emu/README.md).  One host thread per CUDA thread of a block, from a persistent
// pool; blocks run one after another in a chosen order; threads one at a time in a chosen order
// (or all at once); __syncthreads() is a checked barrier.
//
//  * __shared__ variables are function-local statics (blocks run one at a time); the loader finds
//    them in the symbol table of the built module and registers them (ntk_emu_set_shared), and
//    they are filled with 0xFF bytes (a NaN in float and in double) before every block, so an
//    element read before it is written shows.
//  * A barrier mismatch (threads of a block waiting at different __syncthreads, a thread
//    leaving while others wait, or a barrier after a thread of the block has left) stops the
//    launch with the file and line(s); the launch then reports the error to Python.
#pragma once

#include <math.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() ::ntk_emu::sync_threads(__FILE__, __LINE__)

struct uint3 {
  unsigned int x, y, z;
};
using dim3 = uint3;

inline thread_local uint3 threadIdx;  // set by the pool for each worker
inline uint3 blockIdx, blockDim, gridDim;  // set by the launcher before each block (read-only in it)

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

namespace ntk_emu {

struct Abort {};  // thrown in every thread of a failed block to unwind it

// A counting semaphore (C++17 has none): each thread of the pool sleeps on its own, so a block
// start or a barrier release wakes exactly the threads it concerns (no herd on one mutex).
class Semaphore {
 public:
  void post() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++count_;
    }
    cv_.notify_one();
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [this] { return count_ > 0; });
    --count_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

// One thread per CUDA thread of a block, created once per block size and reused by every launch.
//
// Two schedules.  Serial (the default): one thread of the block runs at a time, in a fixed order
// (forward or reverse thread index), until it waits at a barrier or exits; the threads a barrier
// releases queue up behind the others.  Every interleaving is then reproducible, and a missing
// barrier shows deterministically (thread 0 reads shared memory the others have not written yet,
// or overwrites what they have not read yet).  Concurrent: all threads of the block run at once
// (real races, for ThreadSanitizer).
class Pool {
 public:
  explicit Pool(int n) : n_(n), go_(n) {
    for (int t = 0; t < n; ++t) threads_.emplace_back([this, t] { worker(t); });
  }
  ~Pool() {
    quit_ = true;
    for (auto& s : go_) s.post();
    for (auto& t : threads_) t.join();
  }
  int size() const { return n_; }

  enum Schedule { FORWARD = 0, REVERSE = 1, CONCURRENT = 2 };

  // Runs `job` once per thread of the block (threadIdx from `block`); returns "" or the error.
  std::string run_block(const uint3& block, const std::function<void()>& job, int schedule) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      block_ = block;
      serial_ = schedule != CONCURRENT;
      live_ = n_;
      remaining_ = n_;
      waiting_.clear();
      ready_.clear();
      exited_ = false;
      failed_ = false;
      error_.clear();
      for (int q = 0; q < n_; ++q) ready_.push_back(schedule == REVERSE ? n_ - 1 - q : q);
    }
    if (!serial_) {
      for (auto& s : go_) s.post();
    } else {
      int first;
      {
        std::lock_guard<std::mutex> lk(mu_);
        first = ready_.front();
        ready_.pop_front();
      }
      go_[first].post();  // each thread hands the block on to the next when it waits or exits
    }
    done_.wait();
    std::lock_guard<std::mutex> lk(mu_);
    job_ = nullptr;
    return failed_ ? error_ : std::string();
  }

  void sync(const char* file, int line) {
    const int t = self();
    std::unique_lock<std::mutex> lk(mu_);
    if (failed_) throw Abort();
    if (exited_) fail(std::string("__syncthreads() at ") + where(file, line) + " after a thread of the block exited");
    if (waiting_.empty()) {
      bar_file_ = file;
      bar_line_ = line;
    } else if (line != bar_line_ || std::strcmp(file, bar_file_) != 0) {
      fail("threads of one block wait at different __syncthreads(): " + where(bar_file_, bar_line_) + " and " +
           where(file, line));
    }
    if (int(waiting_.size()) + 1 == live_) {  // the last one in: release the others, run on
      release_waiting();
      return;
    }
    waiting_.push_back(t);
    const int next = serial_ ? hand_off() : -1;
    lk.unlock();
    if (next >= 0) go_[next].post();
    go_[t].wait();
    lk.lock();
    if (failed_) throw Abort();
  }

  static Pool*& current() {
    static thread_local Pool* p = nullptr;
    return p;
  }

 private:
  static std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

  static int& self() {
    static thread_local int t = -1;
    return t;
  }

  // (mu_ held, serial) the thread to run next, once this one waits or has exited
  int hand_off() {
    if (ready_.empty()) record("deadlock: every thread of the block waits at " + where(bar_file_, bar_line_));
    if (ready_.empty()) return -1;  // (unreachable: the running thread is then the last at the barrier)
    const int next = ready_.front();
    ready_.pop_front();
    return next;
  }

  // (mu_ held) the waiting threads may go on: now (concurrent) or after those already queued (serial)
  void release_waiting() {
    for (int w : waiting_) {
      if (serial_)
        ready_.push_back(w);
      else
        go_[w].post();
    }
    waiting_.clear();
  }

  // (mu_ held) record the first error, release every waiting thread (to unwind), unwind this one
  [[noreturn]] void fail(const std::string& msg) {
    record(msg);
    throw Abort();
  }

  void record(const std::string& msg) {
    if (!failed_) {
      failed_ = true;
      error_ = msg;
    }
    release_waiting();
  }

  void worker(int t) {
    self() = t;
    current() = this;
    for (;;) {
      go_[t].wait();
      if (quit_) return;
      const std::function<void()>* job;
      bool skip;
      {
        std::lock_guard<std::mutex> lk(mu_);
        job = job_;
        skip = failed_;
        threadIdx = {unsigned(t % block_.x), unsigned(t / block_.x % block_.y), unsigned(t / (block_.x * block_.y))};
      }
      std::string thrown;
      try {
        if (!skip) (*job)();
      } catch (const Abort&) {
      } catch (const std::exception& e) {
        thrown = e.what();
      } catch (...) {
        thrown = "unknown C++ exception";
      }
      bool last;
      int next = -1;
      {
        std::lock_guard<std::mutex> lk(mu_);
        --live_;
        if (!thrown.empty()) record("exception in a kernel thread: " + thrown);
        if (!waiting_.empty() && !failed_)
          record("a thread exited while others of its block wait at __syncthreads() " + where(bar_file_, bar_line_));
        exited_ = true;
        last = --remaining_ == 0;
        if (serial_ && !last) next = hand_off();
      }
      if (last)
        done_.post();
      else if (next >= 0)
        go_[next].post();
    }
  }

  int n_;
  std::vector<std::thread> threads_;
  std::vector<Semaphore> go_;  // per thread: start, or go on after a barrier
  Semaphore done_;
  std::mutex mu_;
  const std::function<void()>* job_ = nullptr;
  uint3 block_{1, 1, 1};
  bool serial_ = true;
  int live_ = 0, remaining_ = 0;
  std::vector<int> waiting_;
  std::deque<int> ready_;
  bool exited_ = false, failed_ = false;
  std::atomic<bool> quit_{false};
  const char* bar_file_ = "";
  int bar_line_ = 0;
  std::string error_;
};

// The __shared__ variables of the module, as (address, bytes), registered by the loader.
inline std::vector<std::pair<char*, size_t>>& shared_regions() {
  static std::vector<std::pair<char*, size_t>> r;
  return r;
}

inline void poison_shared() {
  for (auto& [p, n] : shared_regions()) std::memset(p, 0xFF, n);  // NaN in float and double
}

inline void sync_threads(const char* file, int line) { Pool::current()->sync(file, line); }

inline Pool& pool(int n) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<Pool>> pools;  // one per block size, kept for the process
  std::lock_guard<std::mutex> lk(mu);
  for (auto& p : pools)
    if (p && p->size() == n) return *p;
  pools.push_back(std::make_unique<Pool>(n));
  return *pools.back();
}

}  // namespace ntk_emu
