// Safetensors reading and writing: fixtures written by tests/data/make_safetensors_fixtures.py
// (numpy / torch decodings stored beside the narrow data), exhaustive float16 decoding against an
// ldexp formula, sharded checkpoints, round trips, every kind of header corruption, a seeded
// mutation fuzz (only deviant::Error may ever come out), and the atomic writer's failure paths.
#define BOOST_TEST_MODULE io_safetensors
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "deviant/io/safetensors.hpp"
#include "expect_error.hpp"

using namespace deviant;
using namespace deviant::io;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir = fs::path(DEVIANT_TEST_DATA_DIR) / "safetensors";

// A scratch directory for one test, removed afterwards.
struct ScratchDir {
    fs::path path;
    explicit ScratchDir(const std::string& tag) {
        path = fs::temp_directory_path() / fmt::format("deviant_io_{}_{}", tag, ::getpid());
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~ScratchDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
};

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& p, const std::string& bytes) {
    std::error_code ec;
    fs::remove(p, ec);  // a fresh file: truncating one in place makes some file systems flush on close
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}
// A safetensors file image: little-endian length, header text, data bytes.
std::string file_image(const std::string& header, const std::string& data, std::uint64_t declared_len = ~0ull) {
    std::uint64_t n = declared_len == ~0ull ? header.size() : declared_len;
    std::string out(8, '\0');
    std::memcpy(out.data(), &n, 8);
    return out + header + data;
}

// Expects `f` to throw deviant::Error whose message holds every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
    BOOST_TEST(testing::throws_naming(std::forward<F>(f), fragments));
}

// A header with one entry given as raw JSON, over `data_bytes` of data; opened from a scratch file.
void expect_header_error(const ScratchDir& dir, const std::string& header, std::size_t data_bytes,
                         std::initializer_list<std::string> fragments) {
    fs::path p = dir / "bad.safetensors";
    write_bytes(p, file_image(header, std::string(data_bytes, '\0')));
    std::vector<std::string> all{p.string()};
    for (const auto& f : fragments) all.push_back(f);
    try {
        SafetensorsFile::open(p);
        BOOST_ERROR("header accepted: " << header);
    } catch (const Error& e) {
        std::string msg = e.what();
        for (const auto& frag : all) BOOST_CHECK_MESSAGE(msg.find(frag) != std::string::npos, "'" << msg << "' lacks '" << frag << "'");
    }
}

std::uint32_t float_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

bool cuda_present() { return cuda::available(); }
boost::test_tools::assertion_result cuda_device(boost::unit_test::test_unit_id) {
    boost::test_tools::assertion_result r(cuda_present());
    if (!cuda_present()) r.message() << "no CUDA device";
    return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(basic_fixture_values) {
    auto f = SafetensorsFile::open(data_dir / "basic.safetensors");
    BOOST_TEST(f.size() == 7u);
    std::vector<std::string> expected_names{"empty", "f32", "f64", "i64", "mask", "scalar", "u8"};
    BOOST_TEST(f.names() == expected_names, boost::test_tools::per_element());
    BOOST_TEST(f.contains("f32"));
    BOOST_TEST(!f.contains("nope"));
    BOOST_TEST(f.metadata().at("format") == "np");
    BOOST_TEST(f.metadata().at("note") == "fixture");
    BOOST_TEST(f.info("u8").dtype == "U8");
    BOOST_TEST(f.info("mask").dtype == "BOOL");

    Tensor a = f.load("f32");
    BOOST_TEST((a.shape() == Shape({2, 3})));
    BOOST_TEST((a.dtype() == DType::f32));
    auto av = a.to_vector<double>();
    for (int i = 0; i < 6; ++i) BOOST_TEST(av[i] == 0.5 * i - 1);

    Tensor b = f.load("f64", DType::f64);
    for (int i = 0; i < 4; ++i) BOOST_TEST(b.data<double>()[i] == 1.0 / (i + 1));
    Tensor b32 = f.load("f64");  // narrowed to the default float32
    for (int i = 0; i < 4; ++i) BOOST_TEST(b32.data<float>()[i] == float(1.0 / (i + 1)));

    Tensor c = f.load("i64", DType::i64);
    for (int i = 0; i < 5; ++i) BOOST_TEST(c.data<std::int64_t>()[i] == i * i - 3);
    Tensor cf = f.load("i64");
    for (int i = 0; i < 5; ++i) BOOST_TEST(cf.data<float>()[i] == float(i * i - 3));
    expect_error([&] { f.load("i64", DType::u8); }, {"basic.safetensors", "'i64'", "-3", "uint8"});

    Tensor d = f.load("u8", DType::u8);
    BOOST_TEST((d.shape() == Shape({2, 2})));
    for (int i = 0; i < 4; ++i) BOOST_TEST(int(d.data<std::uint8_t>()[i]) == 10 * i + 1);

    auto mask = f.load("mask", DType::u8).to_vector<int>();
    BOOST_TEST(mask == (std::vector<int>{1, 0, 1}), boost::test_tools::per_element());
    auto mask64 = f.load("mask", DType::i64).to_vector<int>();
    BOOST_TEST(mask64 == (std::vector<int>{1, 0, 1}), boost::test_tools::per_element());

    Tensor e = f.load("empty");
    BOOST_TEST((e.shape() == Shape({0, 4})));
    Tensor s = f.load("scalar");
    BOOST_TEST(s.rank() == 0);
    BOOST_TEST(s.item() == 7.25);

    expect_error([&] { f.load("f32", DType::i64); }, {"basic.safetensors", "'f32'", "F32", "int64"});
    expect_error([&] { f.load("missing"); }, {"basic.safetensors", "'missing'"});
}

BOOST_AUTO_TEST_CASE(matching_dtype_is_a_zero_copy_view_that_outlives_the_file_object) {
    const fs::path path = data_dir / "basic.safetensors";
    const std::string before = read_bytes(path);
    Tensor view, copy;
    {
        auto f = SafetensorsFile::open(path);
        view = f.load("f32", DType::f32);
        Tensor again = f.load("f32", DType::f32);
        BOOST_TEST(view.raw_data() == again.raw_data());  // both point into the one mapping
        BOOST_TEST(static_cast<const void*>(f.raw("f32").data()) == view.raw_data());
        copy = f.load("f32", DType::f64);
        BOOST_TEST(copy.raw_data() != view.raw_data());
    }
    // The mapping stays alive while the view does; writing to it changes the private copy only.
    BOOST_TEST(view.to_vector<double>()[5] == 1.5);
    view.fill_(42.0);
    BOOST_TEST(view.to_vector<double>()[0] == 42.0);
    BOOST_TEST(read_bytes(path) == before);
    BOOST_TEST(SafetensorsFile::open(path).load("f32").to_vector<double>()[0] == -1.0);
}

BOOST_AUTO_TEST_CASE(half_precision_matches_numpy_and_torch) {
    auto f = SafetensorsFile::open(data_dir / "halfs.safetensors");
    BOOST_TEST(f.info("f16").dtype == "F16");
    BOOST_TEST(f.info("bf16").dtype == "BF16");

    Tensor h = f.load("f16"), h_ref = f.load("f16_ref");
    BOOST_TEST((h.shape() == h_ref.shape()));
    for (std::int64_t i = 0; i < h.numel(); ++i) {
        float got = h.data<float>()[i], want = h_ref.data<float>()[i];
        if (std::isnan(want)) BOOST_TEST(std::isnan(got));
        else BOOST_TEST(float_bits(got) == float_bits(want), "f16 element " << i << ": " << got << " vs " << want);
    }
    Tensor h64 = f.load("f16", DType::f64);
    BOOST_TEST(h64.data<double>()[7] == std::ldexp(1.0, -24));  // smallest subnormal

    Tensor b = f.load("bf16"), b_ref = f.load("bf16_ref");
    BOOST_TEST((b.shape() == Shape({3, 4})));
    for (std::int64_t i = 0; i < b.numel(); ++i) {
        float got = b.data<float>()[i], want = b_ref.data<float>()[i];
        if (std::isnan(want)) BOOST_TEST(std::isnan(got));
        else BOOST_TEST(float_bits(got) == float_bits(want), "bf16 element " << i);
    }
    Tensor bn = f.load("bf16", DType::bf16);  // native: a view with the stored bits
    auto raw = f.raw("bf16");
    BOOST_TEST(bn.raw_data() == static_cast<const void*>(raw.data()));
    expect_error([&] { f.load("f16", DType::u8); }, {"halfs.safetensors", "'f16'", "F16"});
}

BOOST_AUTO_TEST_CASE(f16_decoding_is_exact_for_all_65536_values) {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const int sign = (h >> 15) ? -1 : 1, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
        const float got = f16_to_f32(std::uint16_t(h));
        if (exponent == 31) {
            if (mantissa == 0) BOOST_REQUIRE(got == sign * std::numeric_limits<float>::infinity());
            else BOOST_REQUIRE(std::isnan(got));
            continue;
        }
        const double want = exponent == 0 ? sign * std::ldexp(double(mantissa), -24)
                                          : sign * std::ldexp(double(1024 + mantissa), exponent - 25);
        BOOST_REQUIRE_MESSAGE(double(got) == want, "f16 bits " << h << ": " << got << " vs " << want);
        BOOST_REQUIRE(std::signbit(got) == (sign < 0));
    }
}

BOOST_AUTO_TEST_CASE(bf16_and_f8_decoding) {
    BOOST_TEST(bf16_to_f32(0x3F80) == 1.0f);
    BOOST_TEST(bf16_to_f32(0xC040) == -3.0f);
    BOOST_TEST(std::isinf(bf16_to_f32(0x7F80)));
    BOOST_TEST(std::isnan(bf16_to_f32(0x7FC0)));
    BOOST_TEST(bf16_to_f32(0x0001) == std::ldexp(1.0f, -133));  // bf16 subnormal
    BOOST_TEST(f8_e4m3_to_f32(0x38) == 1.0f);
    BOOST_TEST(f8_e4m3_to_f32(0x7E) == 448.0f);     // largest finite
    BOOST_TEST(f8_e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));
    BOOST_TEST(f8_e4m3_to_f32(0xC4) == -3.0f);
    BOOST_TEST(std::isnan(f8_e4m3_to_f32(0x7F)));
    BOOST_TEST(f8_e5m2_to_f32(0x3C) == 1.0f);
    BOOST_TEST(f8_e5m2_to_f32(0x7B) == 57344.0f);
    BOOST_TEST(f8_e5m2_to_f32(0x01) == std::ldexp(1.0f, -16));
    BOOST_TEST(std::isinf(f8_e5m2_to_f32(0xFC)));
}

BOOST_AUTO_TEST_CASE(unaligned_data_is_copied_not_viewed) {
    ScratchDir dir("unaligned");
    // A one-byte U8 tensor, then an F32 at data offset 1 (legal, but not 4-byte aligned).
    float v = -2.75f;
    std::string data(1, '\x07');
    data.append(reinterpret_cast<const char*>(&v), 4);
    std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    write_bytes(dir / "u.safetensors", file_image(header, data));
    auto f = SafetensorsFile::open(dir / "u.safetensors");
    Tensor b = f.load("b", DType::f32);
    BOOST_TEST(b.item() == -2.75);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(b.raw_data()) % 4 == 0u);
    BOOST_TEST(f.load("a", DType::u8).item() == 7.0);
}

BOOST_AUTO_TEST_CASE(sharded_checkpoint) {
    auto r = CheckpointReader::open(data_dir / "sharded");
    std::vector<std::string> names{"a.bias", "a.weight", "b.weight"};
    BOOST_TEST(r.names() == names, boost::test_tools::per_element());
    BOOST_TEST(r.shards().size() == 2u);
    BOOST_TEST(r.contains("b.weight"));
    BOOST_TEST(!r.contains("c.weight"));
    BOOST_TEST(r.file_of("b.weight").filename().string() == "model-00002-of-00002.safetensors");
    auto aw = r.load("a.weight");
    BOOST_TEST((aw.shape() == Shape({3, 2})));
    for (int i = 0; i < 6; ++i) BOOST_TEST(aw.to_vector<double>()[i] == i + 1);
    BOOST_TEST(r.load("a.bias").to_vector<double>() == (std::vector<double>{-1, 1}), boost::test_tools::per_element());
    auto bw = r.load("b.weight", DType::f64).to_vector<double>();
    for (int i = 0; i < 4; ++i) BOOST_TEST(bw[i] == -2.0 * i);
    BOOST_TEST((r.info("b.weight").shape == Shape({2, 2})));
    expect_error([&] { r.load("c.weight"); }, {"model.safetensors.index.json", "'c.weight'"});
    // The index file itself may be named.
    BOOST_TEST(CheckpointReader::open(data_dir / "sharded" / "model.safetensors.index.json").names().size() == 3u);
}

BOOST_AUTO_TEST_CASE(single_file_checkpoint_directory) {
    ScratchDir dir("single");
    save_safetensors(dir / "model.safetensors", {{"w", Tensor::from(std::vector<float>{1, 2, 3}, {3})}});
    auto r = CheckpointReader::open(dir.path);
    BOOST_TEST(r.names() == std::vector<std::string>{"w"}, boost::test_tools::per_element());
    BOOST_TEST(r.load("w").to_vector<double>()[2] == 3.0);
    ScratchDir empty("empty_ckpt");
    expect_error([&] { CheckpointReader::open(empty.path); }, {empty.path.string(), "model.safetensors"});
}

BOOST_AUTO_TEST_CASE(sharded_checkpoint_errors_name_shard_and_tensor) {
    ScratchDir dir("shard_err");
    const std::string shard1 = "model-00001-of-00002.safetensors", shard2 = "model-00002-of-00002.safetensors";
    fs::copy_file(data_dir / "sharded" / shard1, dir / shard1);
    auto write_index = [&](const std::string& weight_map) {
        write_bytes(dir / "model.safetensors.index.json", R"({"metadata": {}, "weight_map": )" + weight_map + "}");
    };
    // Shard 2 absent from the directory.
    write_index(R"({"a.weight": ")" + shard1 + R"(", "b.weight": ")" + shard2 + R"("})");
    expect_error([&] { CheckpointReader::open(dir.path); }, {shard2, "'b.weight'", "index.json"});
    // A tensor the index maps to a shard that lacks it.
    write_index(R"({"a.weight": ")" + shard1 + R"(", "c.weight": ")" + shard1 + R"("})");
    expect_error([&] { CheckpointReader::open(dir.path); }, {shard1, "'c.weight'"});
    // Shard names must stay inside the directory.
    write_index(R"({"a.weight": "../elsewhere.safetensors"})");
    expect_error([&] { CheckpointReader::open(dir.path); }, {"'a.weight'", "../elsewhere.safetensors"});
    write_index(R"({"a.weight": 3})");
    expect_error([&] { CheckpointReader::open(dir.path); }, {"'a.weight'", "index.json"});
    write_bytes(dir / "model.safetensors.index.json", R"({"metadata": {}})");
    expect_error([&] { CheckpointReader::open(dir.path); }, {"weight_map", "index.json"});
    write_bytes(dir / "model.safetensors.index.json", "{ not json");
    expect_error([&] { CheckpointReader::open(dir.path); }, {"index.json", "JSON"});
}

BOOST_AUTO_TEST_CASE(round_trip_all_dtypes) {
    ScratchDir dir("roundtrip");
    std::vector<float> base{1.5f, -2.25f, 3.0f, 0.125f, -7.0f, 1e-20f};
    Tensor f32 = Tensor::from(base, {2, 3});
    Tensor f32_t = f32.transpose(0, 1);  // non-contiguous: saved in its logical (3, 2) order
    Tensor f64 = Tensor::from(std::vector<double>{3.141592653589793, -1e300, 2.0}, {3});
    Tensor b16 = Tensor::from(std::vector<float>{1.0f, -0.5f, 256.0f, 3.0f}, {2, 2}, DType::bf16);
    Tensor i64 = Tensor::from(std::vector<std::int64_t>{std::int64_t(1) << 40, -5, 0}, {1, 3});
    Tensor u8 = Tensor::from(std::vector<std::uint8_t>{0, 255, 17}, {3});
    Tensor zero = Tensor::empty({0, 5});
    Tensor scalar = Tensor::full({}, 9.5);
    const fs::path p = dir / "rt.safetensors";
    save_safetensors(p, {{"x.f32", f32}, {"x.f32_t", f32_t}, {"x.f64", f64}, {"x.bf16", b16}, {"x.i64", i64},
                         {"x.u8", u8}, {"x.zero", zero}, {"x.scalar", scalar}},
                     {{"format", "pt"}, {"step", "12"}});

    // Header length keeps the data section 8-byte aligned; offsets follow the given order.
    std::string bytes = read_bytes(p);
    std::uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    BOOST_TEST(n % 8 == 0u);
    auto f = SafetensorsFile::open(p);
    BOOST_TEST(f.info("x.f32").begin == 0u);
    BOOST_TEST(f.info("x.f32_t").begin == 24u);
    BOOST_TEST(f.info("x.f64").begin == 48u);
    BOOST_TEST(f.info("x.bf16").dtype == "BF16");
    BOOST_TEST(f.metadata().at("format") == "pt");
    BOOST_TEST(f.metadata().at("step") == "12");
    BOOST_TEST(bytes.size() == 8 + n + 24 + 24 + 24 + 8 + 24 + 3 + 0 + 4);

    BOOST_TEST(f.load("x.f32").to_vector<float>() == base, boost::test_tools::per_element());
    std::vector<float> transposed{1.5f, 0.125f, -2.25f, -7.0f, 3.0f, 1e-20f};
    BOOST_TEST((f.load("x.f32_t").shape() == Shape({3, 2})));
    BOOST_TEST(f.load("x.f32_t").to_vector<float>() == transposed, boost::test_tools::per_element());
    BOOST_TEST(f.load("x.f64", DType::f64).to_vector<double>() == f64.to_vector<double>(), boost::test_tools::per_element());
    Tensor b16_back = f.load("x.bf16", DType::bf16);
    BOOST_TEST((b16_back.dtype() == DType::bf16));
    BOOST_TEST(b16_back.to_vector<float>() == (std::vector<float>{1.0f, -0.5f, 256.0f, 3.0f}), boost::test_tools::per_element());
    BOOST_TEST(f.load("x.i64", DType::i64).to_vector<std::int64_t>() == i64.to_vector<std::int64_t>(),
               boost::test_tools::per_element());
    BOOST_TEST(f.load("x.u8", DType::u8).to_vector<int>() == (std::vector<int>{0, 255, 17}), boost::test_tools::per_element());
    BOOST_TEST((f.load("x.zero").shape() == Shape({0, 5})));
    BOOST_TEST(f.load("x.scalar").rank() == 0);
    BOOST_TEST(f.load("x.scalar").item() == 9.5);

    // Overwriting an existing file replaces it whole.
    save_safetensors(p, {{"only", u8}});
    BOOST_TEST(SafetensorsFile::open(p).names() == std::vector<std::string>{"only"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(save_rejects_bad_requests_without_writing) {
    ScratchDir dir("save_bad");
    Tensor t = Tensor::zeros({2});
    const fs::path p = dir / "x.safetensors";
    expect_error([&] { save_safetensors(p, {{"a", t}, {"a", t}}); }, {"x.safetensors", "'a'", "twice"});
    expect_error([&] { save_safetensors(p, {{"", t}}); }, {"x.safetensors", "empty name"});
    expect_error([&] { save_safetensors(p, {{"__metadata__", t}}); }, {"x.safetensors", "__metadata__"});
    expect_error([&] { save_safetensors(p, {{"u", Tensor()}}); }, {"x.safetensors", "'u'", "undefined"});
    expect_error([&] { save_safetensors(p, {{std::string("\xff\xfe"), t}}); }, {"x.safetensors", "UTF-8"});
    BOOST_TEST(fs::is_empty(dir.path));
    expect_error([&] { save_safetensors(dir / "no_such_dir" / "x.safetensors", {{"a", t}}); }, {"no_such_dir", "cannot create"});
}

BOOST_AUTO_TEST_CASE(round_trip_from_cuda, *boost::unit_test::precondition(cuda_device)) {
    ScratchDir dir("cuda_rt");
    Tensor host = Tensor::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor dev = host.to(Device::cuda).transpose(0, 1);
    Tensor dev_b16 = host.to(Device::cuda, DType::bf16);
    save_safetensors(dir / "c.safetensors", {{"t", dev}, {"b", dev_b16}});
    auto f = SafetensorsFile::open(dir / "c.safetensors");
    BOOST_TEST(f.load("t").to_vector<float>() == (std::vector<float>{1, 4, 2, 5, 3, 6}), boost::test_tools::per_element());
    BOOST_TEST(f.load("b", DType::bf16).to_vector<float>() == host.to_vector<float>(), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(every_truncation_is_an_error) {
    ScratchDir dir("trunc");
    for (const char* name : {"basic.safetensors", "halfs.safetensors"}) {
        const std::string good = read_bytes(data_dir / name);
        const fs::path p = dir / "t.safetensors";
        for (std::size_t len = 0; len < good.size(); ++len) {
            write_bytes(p, good.substr(0, len));
            try {
                SafetensorsFile::open(p);
                BOOST_ERROR(name << " truncated to " << len << " bytes was accepted");
            } catch (const Error& e) {
                BOOST_CHECK(std::string(e.what()).find(p.string()) != std::string::npos);
            }
        }
        write_bytes(p, good);
        BOOST_CHECK_NO_THROW(SafetensorsFile::open(p));
    }
}

BOOST_AUTO_TEST_CASE(header_corruptions_name_file_tensor_and_field) {
    ScratchDir dir("corrupt");
    const fs::path p = dir / "bad.safetensors";
    // Length field.
    write_bytes(p, "1234567");
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "7 bytes"});
    write_bytes(p, file_image("{}", "", 3));
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "header length 3"});
    write_bytes(p, file_image("{}", "", ~0ull - 1));
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "header length"});
    {  // over the header size limit but within the (sparse) file
        write_bytes(p, file_image("{}", "", SafetensorsFile::max_header_bytes + 8));
        fs::resize_file(p, SafetensorsFile::max_header_bytes + 64);
        expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "limit"});
    }
    expect_error([&] { SafetensorsFile::open(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
    expect_error([&] { SafetensorsFile::open(dir.path); }, {dir.path.string(), "not a regular file"});

    // JSON shape of the header.
    expect_header_error(dir, "{\"a\": [1, 2", 0, {"not valid JSON"});
    expect_header_error(dir, "\x01\x02garbage", 0, {"not valid JSON"});
    expect_header_error(dir, "[1, 2]", 0, {"JSON object"});
    expect_header_error(dir, R"({"a": 3})", 0, {"'a'", "object"});
    expect_header_error(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                        {"'a'", "more than once"});
    // Fields.
    expect_header_error(dir, R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, {"'w'", "'dtype'"});
    expect_header_error(dir, R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4, {"'w'", "'dtype'", "F33"});
    expect_header_error(dir, R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4, {"'w'", "'dtype'", "string"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, {"'w'", "'shape'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, {"'w'", "'shape'", "-1"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, {"'w'", "'shape'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", 4, {"'w'", "'shape'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4, {"'w'", "'shape'", "9 dims"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}})", 4,
                        {"'w'", "too many elements"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1]}})", 4, {"'w'", "'data_offsets'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8, {"'w'", "'data_offsets'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4, {"'w'", "'data_offsets'"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, {"'w'", "'data_offsets'", "after its end"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 4, {"'w'", "'data_offsets'", "past the 4-byte"});
    expect_header_error(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8, {"'w'", "'data_offsets'", "needs 8"});
    expect_header_error(dir, R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})", 8, {"'w'", "needs 6"});
    expect_header_error(dir, R"({"u":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        12, {"'u'", "'v'", "overlaps"});
    expect_header_error(dir, R"({"__metadata__":{"k":1}})", 0, {"__metadata__", "'k'", "string"});
    expect_header_error(dir, R"({"__metadata__":[]})", 0, {"__metadata__"});

    // Accepted edge cases: zero-size tensors may share an offset, a gap between tensors is allowed.
    write_bytes(p, file_image(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              std::string(8, '\0')));
    BOOST_CHECK_NO_THROW(SafetensorsFile::open(p));
}

BOOST_AUTO_TEST_CASE(fuzzed_headers_only_ever_throw_deviant_errors) {
    ScratchDir dir("fuzz");
    const std::string good = read_bytes(data_dir / "basic.safetensors");
    std::uint64_t header_len;
    std::memcpy(&header_len, good.data(), 8);
    const fs::path p = dir / "f.safetensors";
    std::mt19937 rng(20240611);
    static const char structural[] = "{}[]\":,-0123456789eE. \\tfnu\0\xff";
    const std::string interesting(structural, sizeof(structural) - 1);
    int accepted = 0, rejected = 0;
    for (int iter = 0; iter < 4000; ++iter) {
        std::string bytes = good;
        const int mode = int(rng() % 10);
        if (mode == 0) {  // a length-field byte
            bytes[rng() % 8] = char(rng() & 0xFF);
        } else if (mode == 1) {  // truncate or extend
            bytes.resize(std::size_t(rng() % (good.size() + 16)), '\0');
        } else {  // 1-4 bytes of the header, random or structural
            const int edits = 1 + int(rng() % 4);
            for (int e = 0; e < edits; ++e) {
                std::size_t pos = 8 + rng() % header_len;
                bytes[pos] = (rng() & 1) ? interesting[rng() % interesting.size()] : char(rng() & 0xFF);
            }
        }
        write_bytes(p, bytes);
        try {
            auto f = SafetensorsFile::open(p);
            for (const auto& name : f.names()) {
                for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64, DType::u8}) {
                    try {
                        Tensor t = f.load(name, dt);
                        if (t.numel() > 0) (void)t.to_vector<double>();
                    } catch (const Error&) {
                    }
                }
            }
            ++accepted;
        } catch (const Error& e) {
            ++rejected;
            BOOST_CHECK_MESSAGE(std::string(e.what()).find(p.string()) != std::string::npos,
                                "iteration " << iter << ": message lacks the path: " << e.what());
        } catch (const std::exception& e) {
            BOOST_FAIL("iteration " << iter << ": exception other than deviant::Error: " << e.what());
        } catch (...) {
            BOOST_FAIL("iteration " << iter << ": unknown exception");
        }
    }
    BOOST_TEST_MESSAGE("fuzz: " << accepted << " mutated files accepted, " << rejected << " rejected");
    BOOST_TEST(rejected > 1000);  // the mutations do reach the validation
}

BOOST_AUTO_TEST_CASE(atomic_write_leaves_no_temporary_when_rename_fails) {
    ScratchDir dir("atomic_dir");
    const fs::path target = dir / "ckpt.safetensors";
    fs::create_directories(target / "inside");  // the final rename cannot replace a non-empty directory
    expect_error([&] { save_safetensors(target, {{"w", Tensor::ones({4})}}); }, {"ckpt.safetensors", "rename"});
    BOOST_TEST(fs::is_directory(target / "inside"));
    for (const auto& entry : fs::directory_iterator(dir.path))
        BOOST_TEST(entry.path().filename().string().find(".tmp.") == std::string::npos, "left behind: " << entry.path());
}

BOOST_AUTO_TEST_CASE(atomic_write_failing_midway_keeps_the_old_file) {
    ScratchDir dir("atomic_mid");
    const fs::path target = dir / "ckpt.safetensors";
    save_safetensors(target, {{"w", Tensor::full({8}, 3.0)}});
    const std::string before = read_bytes(target);

    // Make writes past 4 KiB fail (EFBIG) while saving a 64 KiB tensor over the good file.
    struct rlimit old {};
    BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 4096;
    BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    bool threw = false;
    std::string message;
    try {
        save_safetensors(target, {{"w", Tensor::full({16384}, 5.0)}});
    } catch (const Error& e) {
        threw = true;
        message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);

    BOOST_TEST(threw);
    BOOST_TEST(message.find("write failed") != std::string::npos, message);
    BOOST_TEST(read_bytes(target) == before);
    BOOST_TEST(SafetensorsFile::open(target).load("w").to_vector<double>()[7] == 3.0);
    for (const auto& entry : fs::directory_iterator(dir.path))
        BOOST_TEST(entry.path().filename().string().find(".tmp.") == std::string::npos, "left behind: " << entry.path());
}
