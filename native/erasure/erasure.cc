// Reed-Solomon erasure coding for sheep (sheep/replication/erasure.ts): a thin N-API face of
// Intel ISA-L (Debian's libisal-dev). Callers own every buffer: encode fills the parity strips it
// is given, decode fills the missing strips it is given; nothing is allocated per call but the
// small decode matrix (k <= 16), so 4 MiB objects are never copied here.
//
// The code is systematic: strips 0..k-1 are the data, k..k+p-1 parity, rows of a Cauchy matrix
// (every k x k submatrix of it is invertible, so any k strips rebuild the others).

#include <napi.h>
#include <dlfcn.h>
#include <isa-l/erasure_code.h>

#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace {

// node itself exports a symbol named gf_mul (not ISA-L's), and libisal's own calls to gf_mul would
// bind to it and crash: so libisal is opened with RTLD_DEEPBIND (its symbols first) and its
// functions are called through these pointers, never by name.
struct Isal {
  void (*gen_cauchy1_matrix)(unsigned char*, int, int);
  void (*init_tables)(int, int, unsigned char*, unsigned char*);
  void (*encode_data)(int, int, int, unsigned char*, unsigned char**, unsigned char**);
  int (*invert_matrix)(unsigned char*, unsigned char*, const int);
  unsigned char (*mul)(unsigned char, unsigned char);
};

const Isal* isal(std::string& why) {
  static Isal lib;
  static const Isal* ok = nullptr;
  static std::string failed;
  if (ok || !failed.empty()) { why = failed; return ok; }
  void* h = dlopen("libisal.so.2", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!h) { failed = std::string("erasure: cannot load libisal.so.2: ") + dlerror(); why = failed; return nullptr; }
  lib.gen_cauchy1_matrix = reinterpret_cast<decltype(lib.gen_cauchy1_matrix)>(dlsym(h, "gf_gen_cauchy1_matrix"));
  lib.init_tables = reinterpret_cast<decltype(lib.init_tables)>(dlsym(h, "ec_init_tables"));
  lib.encode_data = reinterpret_cast<decltype(lib.encode_data)>(dlsym(h, "ec_encode_data"));
  lib.invert_matrix = reinterpret_cast<decltype(lib.invert_matrix)>(dlsym(h, "gf_invert_matrix"));
  lib.mul = reinterpret_cast<decltype(lib.mul)>(dlsym(h, "gf_mul"));
  if (!lib.gen_cauchy1_matrix || !lib.init_tables || !lib.encode_data || !lib.invert_matrix || !lib.mul) {
    failed = "erasure: libisal.so.2 lacks a needed function";
    why = failed;
    return nullptr;
  }
  ok = &lib;
  return ok;
}

constexpr int kMaxStrips = 32;  // k <= 16 data + p <= 15 parity

struct Code {
  int k = 0, p = 0;
  std::vector<unsigned char> matrix;  // (k+p) x k
  std::vector<unsigned char> encodeTables;  // 32 * k * p
};

std::map<std::pair<int, int>, Code>& codes() {
  static std::map<std::pair<int, int>, Code> m;
  return m;
}

const Code& codeFor(const Isal* L, int k, int p) {
  auto key = std::make_pair(k, p);
  auto it = codes().find(key);
  if (it != codes().end()) return it->second;
  Code c;
  c.k = k;
  c.p = p;
  c.matrix.resize((k + p) * k);
  L->gen_cauchy1_matrix(c.matrix.data(), k + p, k);
  c.encodeTables.resize(32 * k * p);
  L->init_tables(k, p, c.matrix.data() + k * k, c.encodeTables.data());
  return codes().emplace(key, std::move(c)).first->second;
}

bool readGeometry(const Napi::CallbackInfo& info, int& k, int& p, const Isal*& L) {
  std::string why;
  L = isal(why);
  if (!L) {
    Napi::Error::New(info.Env(), why).ThrowAsJavaScriptException();
    return false;
  }
  k = info[0].As<Napi::Number>().Int32Value();
  p = info[1].As<Napi::Number>().Int32Value();
  if (k < 1 || p < 1 || k + p > kMaxStrips) {
    Napi::RangeError::New(info.Env(), "erasure: k and p out of range").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// Collects `count` equal-sized buffers from a JS array; returns their length, or -1 after throwing.
long buffers(const Napi::Env& env, const Napi::Value& v, size_t count, unsigned char** out) {
  if (!v.IsArray()) {
    Napi::TypeError::New(env, "erasure: expected an array of buffers").ThrowAsJavaScriptException();
    return -1;
  }
  auto arr = v.As<Napi::Array>();
  if (arr.Length() != count) {
    Napi::RangeError::New(env, "erasure: wrong number of strips").ThrowAsJavaScriptException();
    return -1;
  }
  long len = -1;
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value e = arr[i];
    if (!e.IsBuffer()) {
      Napi::TypeError::New(env, "erasure: strips must be buffers").ThrowAsJavaScriptException();
      return -1;
    }
    auto b = e.As<Napi::Buffer<unsigned char>>();
    if (len >= 0 && static_cast<long>(b.Length()) != len) {
      Napi::RangeError::New(env, "erasure: strips differ in length").ThrowAsJavaScriptException();
      return -1;
    }
    len = static_cast<long>(b.Length());
    out[i] = b.Data();
  }
  return len;
}

// encode(k, p, data[k], parity[p]): fills parity from data.
Napi::Value Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int k, p;
  const Isal* L;
  if (!readGeometry(info, k, p, L)) return env.Undefined();
  unsigned char* data[kMaxStrips];
  unsigned char* parity[kMaxStrips];
  long len = buffers(env, info[2], k, data);
  if (len < 0) return env.Undefined();
  long plen = buffers(env, info[3], p, parity);
  if (plen < 0) return env.Undefined();
  if (plen != len) {
    Napi::RangeError::New(env, "erasure: parity and data strips differ in length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const Code& c = codeFor(L, k, p);
  if (len > 0) L->encode_data(static_cast<int>(len), k, p, const_cast<unsigned char*>(c.encodeTables.data()), data, parity);
  return env.Undefined();
}

// decode(k, p, present[k], presentIdx[k], missingIdx[n], out[n]): rebuilds the missing strips
// (data or parity) from any k present ones.
Napi::Value Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int k, p;
  const Isal* L;
  if (!readGeometry(info, k, p, L)) return env.Undefined();
  unsigned char* present[kMaxStrips];
  long len = buffers(env, info[2], k, present);
  if (len < 0) return env.Undefined();
  auto idxArr = info[3].As<Napi::Array>();
  auto missArr = info[4].As<Napi::Array>();
  if (idxArr.Length() != static_cast<uint32_t>(k) || missArr.Length() < 1 || missArr.Length() > static_cast<uint32_t>(p)) {
    Napi::RangeError::New(env, "erasure: need k present indexes and 1..p missing ones").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t n = missArr.Length();
  unsigned char* out[kMaxStrips];
  long olen = buffers(env, info[5], n, out);
  if (olen < 0) return env.Undefined();
  if (olen != len) {
    Napi::RangeError::New(env, "erasure: output and input strips differ in length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int presentIdx[kMaxStrips];
  bool seen[kMaxStrips] = {};
  for (int i = 0; i < k; i++) {
    presentIdx[i] = Napi::Value(idxArr[i]).As<Napi::Number>().Int32Value();
    if (presentIdx[i] < 0 || presentIdx[i] >= k + p || seen[presentIdx[i]]) {
      Napi::RangeError::New(env, "erasure: bad present strip index").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    seen[presentIdx[i]] = true;
  }
  const Code& c = codeFor(L, k, p);
  // rows of the present strips, inverted: data = inv * present
  std::vector<unsigned char> sub(k * k), inv(k * k);
  for (int i = 0; i < k; i++) std::memcpy(&sub[i * k], &c.matrix[presentIdx[i] * k], k);
  if (L->invert_matrix(sub.data(), inv.data(), k) != 0) {
    Napi::Error::New(env, "erasure: strips cannot be inverted").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // each missing strip as a combination of the present ones: data row j is inv row j; parity row
  // j is the code's row j times inv
  std::vector<unsigned char> rows(n * k);
  for (size_t m = 0; m < n; m++) {
    int j = Napi::Value(missArr[m]).As<Napi::Number>().Int32Value();
    if (j < 0 || j >= k + p || seen[j]) {
      Napi::RangeError::New(env, "erasure: bad missing strip index").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (j < k) {
      std::memcpy(&rows[m * k], &inv[j * k], k);
    } else {
      for (int col = 0; col < k; col++) {
        unsigned char s = 0;
        for (int t = 0; t < k; t++) s ^= L->mul(c.matrix[j * k + t], inv[t * k + col]);
        rows[m * k + col] = s;
      }
    }
  }
  std::vector<unsigned char> tables(32 * k * n);
  L->init_tables(k, static_cast<int>(n), rows.data(), tables.data());
  if (len > 0) L->encode_data(static_cast<int>(len), k, static_cast<int>(n), tables.data(), present, out);
  return env.Undefined();
}

// split(src, chunk, strips[n]): stripe s of src (n * chunk bytes) gives chunk i to strips[i] at
// s * chunk; join is the inverse. The strip layout of an object, in one pass, not one JS copy per chunk.
Napi::Value Stripe(const Napi::CallbackInfo& info, bool join) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) {
    Napi::TypeError::New(env, "erasure: expected a buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto whole = info[0].As<Napi::Buffer<unsigned char>>();
  long chunk = info[1].As<Napi::Number>().Int64Value();
  auto arr = info[2].As<Napi::Array>();
  size_t n = arr.Length();
  unsigned char* strips[kMaxStrips];
  if (n < 1 || n > kMaxStrips || chunk < 1) {
    Napi::RangeError::New(env, "erasure: bad strip count or chunk").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  long len = buffers(env, info[2], n, strips);
  if (len < 0) return env.Undefined();
  if (len % chunk != 0 || static_cast<size_t>(len) * n != whole.Length()) {
    Napi::RangeError::New(env, "erasure: strips do not tile the buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  unsigned char* w = whole.Data();
  long stripes = len / chunk;
  for (long s = 0; s < stripes; s++) {
    for (size_t i = 0; i < n; i++) {
      unsigned char* a = w + (s * n + i) * chunk;
      unsigned char* b = strips[i] + s * chunk;
      if (join) std::memcpy(a, b, chunk);
      else std::memcpy(b, a, chunk);
    }
  }
  return env.Undefined();
}

Napi::Value Split(const Napi::CallbackInfo& info) { return Stripe(info, false); }
Napi::Value Join(const Napi::CallbackInfo& info) { return Stripe(info, true); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("split", Napi::Function::New(env, Split));
  exports.Set("join", Napi::Function::New(env, Join));
  exports.Set("encode", Napi::Function::New(env, Encode));
  exports.Set("decode", Napi::Function::New(env, Decode));
  return exports;
}

}  // namespace

NODE_API_MODULE(erasure, Init)
