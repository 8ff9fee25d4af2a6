// oneDNN convolutions as XLA FFI handlers: the CPU path of conv_impl='onednn' (cpu/onednn.py).
//
// XLA:CPU lowers convolutions to YNNPACK, whose kernel gradient runs 3-6x slower than its
// forward pass; oneDNN (the library behind PyTorch's and TensorFlow's CPU convolutions) has
// JIT-generated forward, input-gradient and kernel-gradient kernels for NHWC activations. XLA's
// own oneDNN convolution rewrite is not reachable in this jaxlib (--xla_cpu_use_onednn leaves
// the convolutions on YNNPACK), so these few handlers bind it through XLA's FFI.
//
// Layouts are JAX's: activations NHWC, kernels HWIO (kh, kw, cin, cout), f32. oneDNN picks its
// own blocked layout for the kernel ("any"); activations stay NHWC so nothing large is copied.
// Primitives are cached per geometry (their creation costs more than a small convolution);
// each call brings its own scratchpad, so devices of one process may run them concurrently.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry, in oneDNN's logical dimension order (NCHW, OIHW).
struct Geometry {
  memory::dims src, weights, dst, strides, pad_before, pad_after;
  int threads;  // oneDNN sizes its work split when a primitive is created: part of the key
};

// The attributes of every handler: strides, zero padding, and the OpenMP threads to run on
// (devices of one process run their convolutions concurrently, each on its share of the cores).
struct Config {
  int64_t stride_h, stride_w, top, bottom, left, right, threads;
};

Geometry MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k,
                      ffi::Span<const int64_t> y, const Config& p) {
  return Geometry{{x[0], x[3], x[1], x[2]},  {k[3], k[2], k[0], k[1]},
                  {y[0], y[3], y[1], y[2]},  {p.stride_h, p.stride_w},
                  {p.top, p.left},           {p.bottom, p.right},
                  static_cast<int>(p.threads)};
}

memory::desc Desc(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      Desc(g.src, Tag::nhwc), Desc(g.weights, Tag::any), Desc(g.dst, Tag::nhwc), g.strides,
      g.pad_before, g.pad_after, UserScratchpad());
}

// A primitive with the layout it wants the kernel (or its gradient) in and its scratchpad size.
struct Cached {
  dnnl::primitive primitive;
  memory::desc weights;
  memory::desc scratchpad;
};

enum class Op { kForward, kBackwardData, kBackwardWeights };

Cached Create(Op op, const Geometry& g) {
  auto forward = ForwardDesc(g);
  switch (op) {
    case Op::kForward:
      return {dnnl::convolution_forward(forward), forward.weights_desc(),
              forward.scratchpad_desc()};
    case Op::kBackwardData: {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, Desc(g.src, Tag::nhwc),
          Desc(g.weights, Tag::any), Desc(g.dst, Tag::nhwc), g.strides, g.pad_before,
          g.pad_after, forward, UserScratchpad());
      return {dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc()};
    }
    case Op::kBackwardWeights: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, Desc(g.src, Tag::nhwc),
          Desc(g.weights, Tag::any), Desc(g.dst, Tag::nhwc), g.strides, g.pad_before,
          g.pad_after, forward, UserScratchpad());
      return {dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(),
              pd.scratchpad_desc()};
    }
  }
  throw std::logic_error("unknown convolution op");
}

const Cached& Lookup(Op op, const Geometry& g) {
  using Key = std::tuple<int, memory::dims, memory::dims, memory::dims, memory::dims,
                         memory::dims, memory::dims, int>;
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Cached>> cache;
  Key key{static_cast<int>(op), g.src,        g.weights,   g.dst,
          g.strides,              g.pad_before, g.pad_after, g.threads};
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[key];
  if (!entry) entry = std::make_unique<Cached>(Create(op, g));
  return *entry;
}

// Runs the cached primitive with `args` plus a scratchpad of its own (so concurrent calls of one
// primitive from several devices never share one).
void Execute(const Cached& c, std::unordered_map<int, memory> args) {
  dnnl::stream stream(Engine());
  args.insert({DNNL_ARG_SCRATCHPAD, memory(c.scratchpad, Engine())});
  c.primitive.execute(stream, args);
  stream.wait();
}

void Reorder(memory from, memory to) {
  dnnl::stream stream(Engine());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
}

// The HWIO kernel at `data`, in the layout `c` wants (a copy only if that differs).
memory KernelFor(const Cached& c, const Geometry& g, float* data) {
  memory user(Desc(g.weights, Tag::hwio), Engine(), data);
  if (c.weights == user.get_desc()) return user;
  memory packed(c.weights, Engine());
  Reorder(user, packed);
  return packed;
}

memory Activations(const memory::dims& dims, float* data) {
  return memory(Desc(dims, Tag::nhwc), Engine(), data);
}

template <typename F>
ffi::Error Guarded(F&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, e.what());
  }
}

using Buffer4 = ffi::Buffer<ffi::F32, 4>;
using Buffer5 = ffi::Buffer<ffi::F32, 5>;

// y = conv(x, k): x (N, H, W, Cin), k (kh, kw, Cin, Cout), y (N, OH, OW, Cout).
ffi::Error Forward(Buffer4 x, Buffer4 k, ffi::Result<Buffer4> y, Config p) {
  return Guarded([&] {
    Geometry g = MakeGeometry(x.dimensions(), k.dimensions(), y->dimensions(), p);
    omp_set_num_threads(g.threads);  // this calling thread's OpenMP teams from now on
    const Cached& c = Lookup(Op::kForward, g);
    Execute(c, {{DNNL_ARG_SRC, Activations(g.src, x.typed_data())},
                {DNNL_ARG_WEIGHTS, KernelFor(c, g, k.typed_data())},
                {DNNL_ARG_DST, Activations(g.dst, y->typed_data())}});
  });
}

// dx = the input gradient of conv(x, k) for the output gradient dy.
ffi::Error BackwardData(Buffer4 dy, Buffer4 k, ffi::Result<Buffer4> dx, Config p) {
  return Guarded([&] {
    Geometry g = MakeGeometry(dx->dimensions(), k.dimensions(), dy.dimensions(), p);
    omp_set_num_threads(g.threads);  // this calling thread's OpenMP teams from now on
    const Cached& c = Lookup(Op::kBackwardData, g);
    Execute(c, {{DNNL_ARG_DIFF_DST, Activations(g.dst, dy.typed_data())},
                {DNNL_ARG_WEIGHTS, KernelFor(c, g, k.typed_data())},
                {DNNL_ARG_DIFF_SRC, Activations(g.src, dx->typed_data())}});
  });
}

// dk[g] = the kernel gradient of conv(x[g], k) for dy[g], for each of the G groups of a batch
// (x (G, N, H, W, Cin), dy (G, N, OH, OW, Cout), dk (G, kh, kw, Cin, Cout)): the groups are
// what a batch-sharded step splits over devices (cpu/onednn.py sums them).
ffi::Error BackwardWeights(Buffer5 x, Buffer5 dy, ffi::Result<Buffer5> dk, Config p) {
  return Guarded([&] {
    auto xd = x.dimensions(), kd = dk->dimensions(), yd = dy.dimensions();
    Geometry g = MakeGeometry(xd.last(4), kd.last(4), yd.last(4), p);
    omp_set_num_threads(g.threads);  // this calling thread's OpenMP teams from now on
    const Cached& c = Lookup(Op::kBackwardWeights, g);
    const int64_t x_size = xd[1] * xd[2] * xd[3] * xd[4], y_size = yd[1] * yd[2] * yd[3] * yd[4];
    const int64_t k_size = kd[1] * kd[2] * kd[3] * kd[4];
    for (int64_t group = 0; group < xd[0]; ++group) {
      memory user(Desc(g.weights, Tag::hwio), Engine(), dk->typed_data() + group * k_size);
      memory out = c.weights == user.get_desc() ? user : memory(c.weights, Engine());
      Execute(c, {{DNNL_ARG_SRC, Activations(g.src, x.typed_data() + group * x_size)},
                  {DNNL_ARG_DIFF_DST, Activations(g.dst, dy.typed_data() + group * y_size)},
                  {DNNL_ARG_DIFF_WEIGHTS, out}});
      if (out != user) Reorder(out, user);
    }
  });
}

}  // namespace

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(Config, StructMember<int64_t>("stride_h"),
                                      StructMember<int64_t>("stride_w"),
                                      StructMember<int64_t>("top"),
                                      StructMember<int64_t>("bottom"),
                                      StructMember<int64_t>("left"),
                                      StructMember<int64_t>("right"),
                                      StructMember<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SimclrOnednnConvForward, Forward,
                              ffi::Ffi::Bind().Arg<Buffer4>().Arg<Buffer4>().Ret<Buffer4>()
                                  .Attrs<Config>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SimclrOnednnConvBackwardData, BackwardData,
                              ffi::Ffi::Bind().Arg<Buffer4>().Arg<Buffer4>().Ret<Buffer4>()
                                  .Attrs<Config>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SimclrOnednnConvBackwardWeights, BackwardWeights,
                              ffi::Ffi::Bind().Arg<Buffer5>().Arg<Buffer5>().Ret<Buffer5>()
                                  .Attrs<Config>());
