// Attention core softmax(scale q k^T) v for XLA:CPU, forward and backward, one (batch, head) pair per task.
//
// Why: XLA:CPU runs the batched matmuls of attention on a single core (experiments/README.md,
// "A C++ attention kernel for XLA:CPU"); here the batch x heads products are spread over XLA's intra-op thread pool,
// and each product is one single-threaded Eigen GEMM on strided views of the token-major
// (batch, tokens, heads, head_dim) operands, so no transposes are needed around the call.
// Arithmetic is float32; bfloat16 operands are widened per (batch, head) block.
// There is no mask and no dropout (vit_jax/kernels/cpu_attention.py).

// tensorflow's copy of Eigen does not compile its AVX512-FP16 packet math with GCC 12, which
// -march=native enables on CPUs that have it (Sapphire Rapids and later); the kernel computes in
// float32 and needs none of it.
#ifdef __AVX512FP16__
#undef __AVX512FP16__
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>

#include "Eigen/Core"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;

// Runs task(0..count-1) on the caller and the pool's threads; returns when all are done.
// The caller claims tasks too, so a pool whose threads are all busy cannot deadlock us:
// it only ever waits for tasks that another thread has already started.
void ParallelFor(ffi::ThreadPool& pool, int64_t count, const std::function<void(int64_t)>& task) {
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t finished = 0;
    std::mutex mutex;
    std::condition_variable done;
  };
  auto shared = std::make_shared<Shared>();
  // A helper that starts after every task was claimed touches only `shared`, never `task`.
  auto drain = [shared, count, task_ptr = &task]() {
    int64_t finished = 0;
    for (int64_t i = shared->next.fetch_add(1); i < count; i = shared->next.fetch_add(1)) {
      (*task_ptr)(i);
      ++finished;
    }
    if (finished) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->finished += finished;
      if (shared->finished == count) shared->done.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(drain)(drain));
  drain();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->done.wait(lock, [&] { return shared->finished == count; });
}

// Operand geometry: (batch, tokens, heads, head_dim), token-major.
struct Geometry {
  int64_t batch, tokens, heads, head_dim;
  float scale;
  Geometry(const ffi::AnyBuffer& q, float scale) : scale(scale) {
    auto dims = q.dimensions();
    batch = dims[0];
    tokens = dims[1];
    heads = dims[2];
    head_dim = dims[3];
  }
  int64_t pairs() const { return batch * heads; }
  // Offset of token 0 of pair (b, h); tokens are heads * head_dim apart.
  int64_t offset(int64_t pair) const {
    return (pair / heads) * tokens * heads * head_dim + (pair % heads) * head_dim;
  }
  int64_t stride() const { return heads * head_dim; }
};

// One (batch, head) block of a token-major operand, as a float32 tokens x head_dim matrix.
template <typename T>
struct Block {
  // float32 operands are viewed in place; others are widened into `copy`.
  static Eigen::Map<const RowMatrix, 0, Strided> Read(const T* base, const Geometry& g,
                                                      int64_t pair, RowMatrix& copy) {
    const T* start = base + g.offset(pair);
    if constexpr (std::is_same_v<T, float>) {
      return {start, g.tokens, g.head_dim, Strided(g.stride())};
    } else {
      copy.resize(g.tokens, g.head_dim);
      for (int64_t i = 0; i < g.tokens; ++i)
        for (int64_t j = 0; j < g.head_dim; ++j)
          copy(i, j) = static_cast<float>(start[i * g.stride() + j]);
      return {copy.data(), g.tokens, g.head_dim, Strided(g.head_dim)};
    }
  }
  // Stores the product `value` (lazily evaluated): float32 results land in place, others through
  // a float32 temporary that is narrowed on the way out.
  template <typename Product>
  static void Write(const Product& value, T* base, const Geometry& g, int64_t pair) {
    T* start = base + g.offset(pair);
    if constexpr (std::is_same_v<T, float>) {
      Eigen::Map<RowMatrix, 0, Strided> out(start, g.tokens, g.head_dim, Strided(g.stride()));
      out.noalias() = value;
    } else {
      const RowMatrix result = value;
      for (int64_t i = 0; i < g.tokens; ++i)
        for (int64_t j = 0; j < g.head_dim; ++j)
          start[i * g.stride() + j] = static_cast<T>(result(i, j));
    }
  }
};

template <typename T>
void ForwardPair(const T* q, const T* k, const T* v, T* out, float* probs, const Geometry& g,
                 int64_t pair) {
  RowMatrix q_copy, k_copy, v_copy;
  auto qm = Block<T>::Read(q, g, pair, q_copy);
  auto km = Block<T>::Read(k, g, pair, k_copy);
  auto vm = Block<T>::Read(v, g, pair, v_copy);
  Eigen::Map<RowMatrix> p(probs + pair * g.tokens * g.tokens, g.tokens, g.tokens);
  p.noalias() = g.scale * (qm * km.transpose());
  for (int64_t i = 0; i < g.tokens; ++i) {
    auto row = p.row(i);
    const float top = row.maxCoeff();
    row = (row.array() - top).exp();
    row /= row.sum();
  }
  Block<T>::Write(p * vm, out, g, pair);
}

template <typename T>
void BackwardPair(const T* q, const T* k, const T* v, const float* probs, const T* dout, T* dq,
                  T* dk, T* dv, const Geometry& g, int64_t pair) {
  RowMatrix q_copy, k_copy, v_copy, dout_copy;
  auto qm = Block<T>::Read(q, g, pair, q_copy);
  auto km = Block<T>::Read(k, g, pair, k_copy);
  auto vm = Block<T>::Read(v, g, pair, v_copy);
  auto dom = Block<T>::Read(dout, g, pair, dout_copy);
  Eigen::Map<const RowMatrix> p(probs + pair * g.tokens * g.tokens, g.tokens, g.tokens);
  Block<T>::Write(p.transpose() * dom, dv, g, pair);
  RowMatrix dlogits(g.tokens, g.tokens);
  dlogits.noalias() = dom * vm.transpose();
  // Softmax backward: dS = P * (dP - rowsum(P * dP)).
  for (int64_t i = 0; i < g.tokens; ++i) {
    const float centre = p.row(i).dot(dlogits.row(i));
    dlogits.row(i) = p.row(i).cwiseProduct((dlogits.row(i).array() - centre).matrix());
  }
  Block<T>::Write(g.scale * (dlogits * km), dq, g, pair);
  Block<T>::Write(g.scale * (dlogits.transpose() * qm), dk, g, pair);
}

template <typename T>
ffi::Error Forward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> probs, float scale) {
  const Geometry g(q, scale);
  const T* qp = static_cast<const T*>(q.untyped_data());
  const T* kp = static_cast<const T*>(k.untyped_data());
  const T* vp = static_cast<const T*>(v.untyped_data());
  T* op = static_cast<T*>(out->untyped_data());
  float* pp = static_cast<float*>(probs->untyped_data());
  ParallelFor(pool, g.pairs(), [&](int64_t pair) { ForwardPair<T>(qp, kp, vp, op, pp, g, pair); });
  return ffi::Error::Success();
}

template <typename T>
ffi::Error Backward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                    ffi::AnyBuffer probs, ffi::AnyBuffer dout, ffi::Result<ffi::AnyBuffer> dq,
                    ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, float scale) {
  const Geometry g(q, scale);
  const T* qp = static_cast<const T*>(q.untyped_data());
  const T* kp = static_cast<const T*>(k.untyped_data());
  const T* vp = static_cast<const T*>(v.untyped_data());
  const float* pp = static_cast<const float*>(probs.untyped_data());
  const T* dop = static_cast<const T*>(dout.untyped_data());
  T* dqp = static_cast<T*>(dq->untyped_data());
  T* dkp = static_cast<T*>(dk->untyped_data());
  T* dvp = static_cast<T*>(dv->untyped_data());
  ParallelFor(pool, g.pairs(), [&](int64_t pair) {
    BackwardPair<T>(qp, kp, vp, pp, dop, dqp, dkp, dvp, g, pair);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardAnyType(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k,
                          ffi::AnyBuffer v, ffi::Result<ffi::AnyBuffer> out,
                          ffi::Result<ffi::AnyBuffer> probs, float scale) {
  switch (q.element_type()) {
    case ffi::DataType::F32: return Forward<float>(pool, q, k, v, out, probs, scale);
    case ffi::DataType::BF16: return Forward<Eigen::bfloat16>(pool, q, k, v, out, probs, scale);
    default: return ffi::Error::InvalidArgument("cpu attention takes float32 or bfloat16");
  }
}

ffi::Error BackwardAnyType(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k,
                           ffi::AnyBuffer v, ffi::AnyBuffer probs, ffi::AnyBuffer dout,
                           ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                           ffi::Result<ffi::AnyBuffer> dv, float scale) {
  switch (q.element_type()) {
    case ffi::DataType::F32: return Backward<float>(pool, q, k, v, probs, dout, dq, dk, dv, scale);
    case ffi::DataType::BF16:
      return Backward<Eigen::bfloat16>(pool, q, k, v, probs, dout, dq, dk, dv, scale);
    default: return ffi::Error::InvalidArgument("cpu attention takes float32 or bfloat16");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxAttentionForward, ForwardAnyType,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxAttentionBackward, BackwardAnyType,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));
