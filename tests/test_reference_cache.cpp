// Reference log-prob cache (train/reference_cache.hpp) on the tiny Llama fixtures:
//  - XXH64 against digests of the reference xxHash implementation (Python `xxhash` 3.x);
//  - a second call loads instead of recomputing (compute calls counted), values bit-identical
//    to a fresh computation and close to transformers' reference log-probs (expected.json);
//  - one changed token id or one changed weight gives a new key, a changed pair weight does not;
//  - truncated, bit-flipped, mislabelled and miscounted files are rejected with a message and
//    recomputed, and the rewritten file then loads.
#define BOOST_TEST_MODULE reference_cache
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "deviant/models/load.hpp"
#include "deviant/train/reference_cache.hpp"

using namespace deviant;
namespace fs = std::filesystem;

namespace {

const std::string models = DEVIANT_TEST_DATA_DIR "/models/";

// A fresh, empty directory removed at the end of the test.
struct TempDir {
    fs::path path;
    explicit TempDir(const std::string& tag) {
        path = fs::temp_directory_path() / fmt::format("deviant-refcache-{}-{}", tag, ::getpid());
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// reference_logps, counting its calls.
struct CountingCompute {
    int* calls;
    template <class Model>
    std::pair<Tensor, Tensor> operator()(const Model& m, const SequenceRows& rows) const {
        ++*calls;
        return reference_logps(m, rows);
    }
};

std::vector<data::TokenPair> fixture_pairs() { return data::read_token_pairs(models + "pairs.jsonl", 96); }

std::vector<char> read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& p, const std::vector<char>& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace

BOOST_AUTO_TEST_CASE(xxh64_matches_reference_digests) {
    // Digests from the reference implementation: xxhash.xxh64(data, seed).hexdigest().
    struct Case {
        std::size_t length;
        std::uint64_t seed0, seed_golden;
    };
    const Case cases[] = {
        {0, 0xef46db3751d8e999ULL, 0xc4349fc93c010000ULL},    {1, 0xd24ec4f1a98c6e5bULL, 0x9a7c6d2ea45568c9ULL},
        {31, 0xc346d2b59b4d8ee1ULL, 0xf3da6d05709c035dULL},   {32, 0xcbf59c5116ff32b4ULL, 0xa1c89217e9d50750ULL},
        {33, 0x0c535d1acafb8eadULL, 0xe6a3c00cd6e74075ULL},   {1000, 0x25275608a9cfc168ULL, 0x77ecbbeb00a44532ULL},
    };
    const std::uint64_t golden = 0x9E3779B97F4A7C15ULL;
    for (const Case& c : cases) {
        std::vector<unsigned char> data(c.length);
        for (std::size_t i = 0; i < c.length; ++i) data[i] = c.length == 1 ? 'a' : (c.length == 1000 ? (i * 7) % 256 : i);
        BOOST_TEST(ContentHash::of(data.data(), data.size()) == c.seed0, "length " << c.length);
        BOOST_TEST(ContentHash::of(data.data(), data.size(), golden) == c.seed_golden, "length " << c.length << " golden seed");
        // streaming in uneven pieces gives the one-shot digest
        ContentHash h;
        for (std::size_t s = 0, step = 1; s < data.size(); s += step, step = step % 13 + 5)
            h.update(data.data() + s, std::min(step, data.size() - s));
        BOOST_TEST(h.digest() == c.seed0, "streamed length " << c.length);
    }
    unsigned char abc[] = {'a', 'b', 'c'};
    BOOST_TEST(ContentHash::of(abc, 3) == 0x44bc2cf5ad770999ULL);
    BOOST_TEST(ContentHash::hex(0xabcULL) == "0000000000000abc");
}

BOOST_AUTO_TEST_CASE(second_call_loads_without_recomputing) {
    TempDir dir("load");
    auto pairs = fixture_pairs();
    BOOST_REQUIRE(pairs.size() == 5);
    auto ref = load_pretrained_as<Llama>(models + "llama_ref", DType::f64);

    int calls = 0;
    auto first = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 2, CountingCompute{&calls});
    BOOST_TEST(calls == 3);  // batches of 2, 2, 1
    BOOST_TEST((first.source == CachedReferenceLogps::Source::computed));
    BOOST_TEST(fs::exists(first.file));
    BOOST_TEST(first.file.filename().string() ==
               fmt::format("ref-logps-{}-{}.safetensors", ContentHash::hex(first.data_hash), ContentHash::hex(first.model_hash)));
    BOOST_TEST(first.note.empty());

    calls = 0;
    auto second = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 2, CountingCompute{&calls});
    BOOST_TEST(calls == 0);
    BOOST_TEST((second.source == CachedReferenceLogps::Source::loaded));
    BOOST_TEST((second.chosen.dtype() == DType::f64));
    BOOST_TEST(second.chosen.to_vector<double>() == first.chosen.to_vector<double>());
    BOOST_TEST(second.rejected.to_vector<double>() == first.rejected.to_vector<double>());

    // The default compute function is reference_logps; a different batch size still loads.
    auto third = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0);
    BOOST_TEST((third.source == CachedReferenceLogps::Source::loaded));

    // Cached values equal a fresh computation exactly (same batching), and transformers' numbers closely.
    std::vector<double> fresh_c, fresh_r;
    for (std::size_t s = 0; s < pairs.size(); s += 2) {
        auto rows = make_rows(std::span(pairs).subspan(s, std::min<std::size_t>(2, pairs.size() - s)), DType::f64);
        auto [c, r] = reference_logps(*ref, rows);
        for (double v : c.to_vector<double>()) fresh_c.push_back(v);
        for (double v : r.to_vector<double>()) fresh_r.push_back(v);
    }
    BOOST_TEST(second.chosen.to_vector<double>() == fresh_c);
    BOOST_TEST(second.rejected.to_vector<double>() == fresh_r);
    std::ifstream in(models + "expected.json");
    auto want = nlohmann::json::parse(in)["llama_dpo"]["pairs"];
    for (std::size_t i = 0; i < pairs.size(); ++i) {
        double wc = want[i]["ref_chosen_logp"], wr = want[i]["ref_rejected_logp"];
        BOOST_TEST(std::abs(fresh_c[i] - wc) <= 1e-6 * std::abs(wc), "pair " << i);
        BOOST_TEST(std::abs(fresh_r[i] - wr) <= 1e-6 * std::abs(wr), "pair " << i);
    }

    auto [bc, br] = second.batch(3, 2);
    BOOST_TEST(bc.to_vector<double>() == (std::vector<double>{fresh_c[3], fresh_c[4]}));
    BOOST_TEST(br.to_vector<double>() == (std::vector<double>{fresh_r[3], fresh_r[4]}));
    BOOST_CHECK_THROW(second.batch(4, 2), Error);
}

BOOST_AUTO_TEST_CASE(key_follows_token_ids_and_weights_not_pair_weights) {
    auto pairs = fixture_pairs();
    const std::uint64_t base = token_pairs_hash(pairs);
    BOOST_TEST(token_pairs_hash(pairs) == base);  // deterministic

    auto changed = pairs;
    changed[3].rejected[1] += 1;  // one token id
    BOOST_TEST(token_pairs_hash(changed) != base);

    auto moved = pairs;  // same ids, one moved from the prompt into the completion
    moved[0].chosen.insert(moved[0].chosen.begin(), moved[0].prompt.back());
    moved[0].prompt.pop_back();
    BOOST_TEST(token_pairs_hash(moved) != base);

    auto swapped = pairs;  // order matters
    std::swap(swapped[0], swapped[1]);
    BOOST_TEST(token_pairs_hash(swapped) != base);

    auto reweighted = pairs;  // weights do not enter a reference log-prob
    reweighted[1].weight = 0.25;
    BOOST_TEST(token_pairs_hash(reweighted) == base);

    auto ref = load_pretrained_as<Llama>(models + "llama_ref", DType::f32);
    const std::uint64_t model = model_content_hash(*ref);
    BOOST_TEST(model_content_hash(*load_pretrained_as<Llama>(models + "llama_ref", DType::f32)) == model);
    BOOST_TEST(model_content_hash(*load_pretrained_as<Llama>(models + "llama", DType::f32)) != model);
    BOOST_TEST(model_content_hash(*load_pretrained_as<Llama>(models + "llama_ref", DType::f64)) != model);  // compute precision

    Parameter& p = ref->store.at("model.layers.1.mlp.down_proj.weight");
    p.value.data<float>()[7] += 1e-3f;  // one weight
    BOOST_TEST(model_content_hash(*ref) != model);
    p.value.data<float>()[7] -= 1e-3f;
    BOOST_TEST(model_content_hash(*ref) == model);

    ref->config.rope_theta *= 2;  // a config field that changes the forward
    BOOST_TEST(model_content_hash(*ref) != model);
    ref->config.rope_theta /= 2;

    // A changed id or weight selects a different file and computes it.
    TempDir dir("key");
    int calls = 0;
    auto a = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, CountingCompute{&calls});
    auto b = ReferenceCache::load_or_compute(dir.path, changed, *ref, 0, CountingCompute{&calls});
    BOOST_TEST(calls == 2);
    BOOST_TEST(a.file != b.file);
    BOOST_TEST(a.rejected.to_vector<double>()[3] != b.rejected.to_vector<double>()[3]);
    BOOST_TEST(a.chosen.to_vector<double>()[0] == b.chosen.to_vector<double>()[0]);
    p.value.data<float>()[7] += 1e-3f;
    auto c = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, CountingCompute{&calls});
    BOOST_TEST(calls == 3);
    BOOST_TEST(c.file != a.file);
    BOOST_TEST(c.data_hash == a.data_hash);
    BOOST_TEST(c.model_hash != a.model_hash);
}

BOOST_AUTO_TEST_CASE(corrupt_or_mismatching_files_are_rejected_and_recomputed) {
    TempDir dir("corrupt");
    auto pairs = fixture_pairs();
    auto ref = load_pretrained_as<Llama>(models + "llama_ref", DType::f32);
    int calls = 0;
    auto good = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, CountingCompute{&calls});
    BOOST_REQUIRE(calls == 1);
    const std::vector<char> pristine = read_bytes(good.file);
    const std::int64_t n = std::int64_t(pairs.size());

    // Each damage must be caught with a message naming the cause; the file is then rewritten.
    auto expect_recomputed = [&](const std::string& what, const std::string& message_part) {
        BOOST_TEST_CONTEXT(what) {
            BOOST_CHECK_EXCEPTION(ReferenceCache::load_verified(good.file, good.data_hash, good.model_hash, n), Error,
                                  [&](const Error& e) { return std::string(e.what()).find(message_part) != std::string::npos; });
            int before = calls;
            auto r = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, CountingCompute{&calls});
            BOOST_TEST(calls == before + 1);
            BOOST_TEST((r.source == CachedReferenceLogps::Source::recomputed));
            BOOST_TEST(r.note.find(message_part) != std::string::npos, r.note);
            BOOST_TEST(r.note.find(good.file.string()) != std::string::npos, r.note);
            BOOST_TEST(r.chosen.to_vector<double>() == good.chosen.to_vector<double>());
            BOOST_TEST(read_bytes(good.file) == pristine);  // rewritten whole
            auto again = ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, CountingCompute{&calls});
            BOOST_TEST((again.source == CachedReferenceLogps::Source::loaded));
            BOOST_TEST(calls == before + 1);
        }
    };

    {  // truncated: the data section ends early
        auto bytes = pristine;
        bytes.resize(bytes.size() - 12);
        write_bytes(good.file, bytes);
        expect_recomputed("truncated", "past the");
    }
    {  // truncated inside the header length
        write_bytes(good.file, std::vector<char>(pristine.begin(), pristine.begin() + 5));
        expect_recomputed("truncated header", "at least 8");
    }
    {  // one flipped bit in the last stored value
        auto bytes = pristine;
        bytes[bytes.size() - 3] ^= 0x10;
        write_bytes(good.file, bytes);
        expect_recomputed("bit flip", "values_hash");
    }
    auto write_with = [&](std::map<std::string, std::string> meta, Tensor chosen, Tensor rejected) {
        io::save_safetensors(good.file, {{"chosen", chosen}, {"rejected", rejected}}, meta);
    };
    const auto meta = io::SafetensorsFile::open(good.file).metadata();
    {  // metadata of another data set under this name
        auto m = meta;
        m["data_hash"] = ContentHash::hex(good.data_hash ^ 1);
        write_with(m, good.chosen, good.rejected);
        expect_recomputed("data hash", "'data_hash'");
    }
    {  // another model
        auto m = meta;
        m["model_hash"] = ContentHash::hex(good.model_hash + 1);
        write_with(m, good.chosen, good.rejected);
        expect_recomputed("model hash", "'model_hash'");
    }
    {  // wrong count, with arrays and metadata agreeing with each other
        auto m = meta;
        m["count"] = std::to_string(n - 1);
        write_with(m, good.chosen.narrow(0, 0, n - 1).contiguous(), good.rejected.narrow(0, 0, n - 1).contiguous());
        expect_recomputed("count", "'count'");
    }
    {  // right count in the metadata, short arrays
        write_with(meta, good.chosen.narrow(0, 0, n - 1).contiguous(), good.rejected.narrow(0, 0, n - 1).contiguous());
        expect_recomputed("short arrays", "expected F64");
    }
    {  // float32 arrays
        write_with(meta, good.chosen.to(DType::f32), good.rejected.to(DType::f32));
        expect_recomputed("dtype", "expected F64");
    }
    {  // a newer format version
        auto m = meta;
        m["format_version"] = "2";
        write_with(m, good.chosen, good.rejected);
        expect_recomputed("version", "'format_version'");
    }
    {  // no metadata at all
        write_with({}, good.chosen, good.rejected);
        expect_recomputed("no metadata", "missing");
    }
    {  // values changed consistently except for values_hash
        Tensor c = good.chosen.clone();
        c.data<double>()[0] += 1.0;
        write_with(meta, c, good.rejected);
        expect_recomputed("edited values", "values_hash");
    }
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_errors) {
    TempDir dir("bad");
    auto ref = load_pretrained_as<Llama>(models + "llama_ref", DType::f32);
    std::vector<data::TokenPair> none;
    BOOST_CHECK_THROW(ReferenceCache::load_or_compute(dir.path, none, *ref, 0), Error);
    auto pairs = fixture_pairs();
    // a compute function that returns the wrong number of log-probs
    auto short_fn = [](const Llama& m, const SequenceRows& rows) {
        auto [c, r] = reference_logps(m, rows);
        return std::pair{c.narrow(0, 0, 1).contiguous(), r};
    };
    BOOST_CHECK_THROW(ReferenceCache::load_or_compute(dir.path, pairs, *ref, 0, short_fn), Error);
    BOOST_TEST(fs::is_empty(dir.path));  // nothing written
    // a cache "directory" that is a file
    std::ofstream(dir.path / "file") << "x";
    BOOST_CHECK_THROW(ReferenceCache::load_or_compute(dir.path / "file", pairs, *ref, 0), Error);
}
