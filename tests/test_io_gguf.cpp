// GGUF loading against llama.cpp's own writer and quantizers (tests/data/gguf/make_gguf_fixtures.py,
// `gguf` package): the tiny Llama of tests/data/models stored as F32, F16/BF16, Q8_0 and Q4_0/Q4_1
// GGUF files gives the log-probs transformers computes from each file's dequantized tensors; the
// float32 file equals the safetensors checkpoint exactly; metadata becomes the model config; and
// truncated, corrupted or unsupported files give one deviant::Error naming the file, never a crash.
#define BOOST_TEST_MODULE io_gguf
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "expect_error.hpp"
#include "temp_dir.hpp"
#include "deviant/data/pairs.hpp"
#include "deviant/models/load.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"
#include "deviant/train/pair_rows.hpp"

using namespace deviant;
using deviant::testing::TempDir;
using deviant::testing::throws_naming;
using nlohmann::json;

namespace {

const std::string gguf_dir = std::string(DEVIANT_TEST_DATA_DIR) + "/gguf/";
const std::string models_dir = std::string(DEVIANT_TEST_DATA_DIR) + "/models/";

const json& expected() {
    static const json j = [] {
        std::ifstream in(gguf_dir + "expected.json");
        BOOST_TEST_REQUIRE(in.good());
        return json::parse(in);
    }();
    return j;
}

// Completion log-probs (chosen then rejected, per pair) of the pairs fixture under the model at `path`.
std::vector<double> logps_of(const std::string& path) {
    return with_pretrained(path, [](auto& model) {
        auto pairs = data::read_token_pairs(models_dir + "pairs.jsonl", model.config.vocab_size);
        auto [c, r] = reference_logps(model, make_rows(pairs, DType::f32));
        std::vector<double> out;
        auto cv = c.template to_vector<double>(), rv = r.template to_vector<double>();
        for (std::size_t i = 0; i < cv.size(); ++i) out.push_back(cv[i]), out.push_back(rv[i]);
        return out;
    });
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A minimal GGUF file by hand: one metadata string, one tensor of `type` with 32 x 2 values.
std::string tiny_gguf(std::uint32_t version, std::uint32_t type, std::uint64_t offset, std::size_t data_bytes) {
    std::string b;
    auto u32 = [&](std::uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
    auto u64 = [&](std::uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); };
    auto str = [&](const std::string& s) { u64(s.size()), b += s; };
    b += "GGUF";
    u32(version);
    u64(1);  // tensors
    u64(1);  // metadata
    str("general.architecture"), u32(8), str("llama");
    str("w"), u32(2), u64(32), u64(2), u32(type), u64(offset);
    while (b.size() % 32) b.push_back('\0');
    b.append(data_bytes, '\x01');
    return b;
}

}  // namespace

BOOST_AUTO_TEST_CASE(log_probs_match_transformers_on_every_storage_type) {
    for (std::string file : {"llama_f32.gguf", "llama_f16.gguf", "llama_q8_0.gguf", "llama_q4_0.gguf", "qwen2_f32.gguf", "qwen2_q8_0.gguf"}) {
        BOOST_TEST_CONTEXT(file) {
            std::vector<double> got = logps_of(gguf_dir + file);
            const json& want = expected()[file]["pairs"];
            BOOST_REQUIRE_EQUAL(got.size(), 2 * want.size());
            for (std::size_t i = 0; i < want.size(); ++i) {
                for (auto [k, key] : {std::pair{0, "chosen_logp"}, std::pair{1, "rejected_logp"}}) {
                    const double w = want[i][key].get<double>(), g = got[2 * i + std::size_t(k)];
                    BOOST_TEST(std::abs(g - w) <= 1e-4 * std::abs(w), "pair " << i << " " << key << ": " << g << " vs " << w);
                }
            }
        }
    }
    // Quantization changed the numbers (the comparison above can tell files apart).
    BOOST_TEST(std::abs(expected()["llama_q4_0.gguf"]["pairs"][0]["chosen_logp"].get<double>() -
                        expected()["original"]["pairs"][0]["chosen_logp"].get<double>()) > 1e-2);
}

BOOST_AUTO_TEST_CASE(float32_gguf_equals_the_safetensors_checkpoint) {
    BOOST_TEST(logps_of(gguf_dir + "llama_f32.gguf") == logps_of(models_dir + "llama"));
}

BOOST_AUTO_TEST_CASE(metadata_becomes_the_model_config) {
    io::GgufFile f = io::GgufFile::open(gguf_dir + "llama_q4_0.gguf");
    io::ModelConfig g = io::gguf_model_config(f), hf = io::load_model_config(models_dir + "llama");
    BOOST_TEST(f.version() == 3u);
    BOOST_TEST(g.vocab_size == hf.vocab_size);
    BOOST_TEST(g.hidden_size == hf.hidden_size);
    BOOST_TEST(g.intermediate_size == hf.intermediate_size);
    BOOST_TEST(g.num_hidden_layers == hf.num_hidden_layers);
    BOOST_TEST(g.num_attention_heads == hf.num_attention_heads);
    BOOST_TEST(g.num_key_value_heads == hf.num_key_value_heads);
    BOOST_TEST(g.head_dim == hf.head_dim);
    BOOST_TEST(g.max_position_embeddings == hf.max_position_embeddings);
    BOOST_TEST(std::abs(g.norm_eps - hf.norm_eps) < 1e-12);
    BOOST_TEST(g.rope_theta == hf.rope_theta);
    BOOST_TEST(g.tie_word_embeddings == hf.tie_word_embeddings);
    for (const auto& [name, type] : expected()["llama_q4_0.gguf"]["tensor_types"].items())
        BOOST_TEST(f.info(name).type == type.get<std::uint32_t>(), name);
    // The config written for a GGUF start reads back as the same model.
    TempDir dir("deviant_gguf_config");
    std::ofstream(dir.path / "config.json") << io::llama_config_json(g);
    io::ModelConfig back = io::load_model_config(dir.path);
    BOOST_TEST(back.num_key_value_heads == g.num_key_value_heads);
    BOOST_TEST(back.rope_theta == g.rope_theta);
    BOOST_TEST(back.vocab_size == g.vocab_size);
}

BOOST_AUTO_TEST_CASE(qwen2_files_have_biases_tied_embeddings_and_unpermuted_rows) {
    io::GgufFile f = io::GgufFile::open(gguf_dir + "qwen2_f32.gguf");
    io::ModelConfig c = io::gguf_model_config(f);
    BOOST_TEST(c.model_type == "qwen2");
    BOOST_TEST(c.attention_bias);
    BOOST_TEST(c.tie_word_embeddings);
    BOOST_TEST(c.rope_theta == 1e6);
    BOOST_TEST(f.contains("blk.1.attn_v.bias"));
    // saved config.json reads back as Qwen2
    TempDir dir("deviant_gguf_qwen2");
    std::ofstream(dir.path / "config.json") << io::llama_config_json(c);
    io::ModelConfig back = io::load_model_config(dir.path);
    BOOST_TEST(back.model_type == "qwen2");
    BOOST_TEST(back.attention_bias);
    BOOST_TEST(back.tie_word_embeddings);
}

BOOST_AUTO_TEST_CASE(rotary_rows_are_put_back_in_rotate_half_order) {
    // 2 heads of 4 rows, 1 column: GGUF row h*4 + 2i + s holds HF row h*4 + s*2 + i.
    Tensor g = Tensor::from(std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}, {8, 1});
    BOOST_TEST(io::unpermute_rotary_rows(g, 2, "w").to_vector<double>() == (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7}));
    BOOST_TEST(throws_naming([&] { io::unpermute_rotary_rows(Tensor::zeros({6, 1}), 2, "blk.0.attn_q"); }, {"blk.0.attn_q", "(6, 1)"}));
}

BOOST_AUTO_TEST_CASE(truncated_files_are_errors_naming_the_file) {
    const std::string full = slurp(gguf_dir + "llama_q4_0.gguf");
    TempDir dir("deviant_gguf_truncated");
    const auto path = dir.path / "cut.gguf";
    int checked = 0;
    for (std::size_t n = 0; n < full.size(); n += (n < 2048 ? 7 : 331)) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << full.substr(0, n);
        BOOST_TEST(throws_naming([&] { io::GgufFile::open(path); }, {path.string()}), "length " << n);
        ++checked;
    }
    BOOST_TEST(checked > 300);
}

BOOST_AUTO_TEST_CASE(corrupted_bytes_never_crash) {
    const std::string full = slurp(gguf_dir + "llama_q8_0.gguf");
    TempDir dir("deviant_gguf_fuzz");
    const auto path = dir.path / "fuzz.gguf";
    std::mt19937 rng(5);
    int errors = 0;
    for (int k = 0; k < 600; ++k) {
        std::string bytes = full;
        const std::size_t header = std::min<std::size_t>(bytes.size(), 4096);  // metadata and tensor infos live there
        for (int flips = 0; flips < 1 + int(rng() % 4); ++flips) bytes[rng() % header] = char(rng() % 256);
        std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
        try {
            io::GgufFile f = io::GgufFile::open(path);
            for (const auto& t : f.tensors())
                if (io::detail::ggml_block(t.type)) (void)f.load(t.name);
        } catch (const Error&) {
            ++errors;
        }
    }
    BOOST_TEST(errors > 100);  // most corruptions are caught; none crashed
}

BOOST_AUTO_TEST_CASE(bad_headers_and_unsupported_types) {
    TempDir dir("deviant_gguf_bad");
    auto write = [&](const std::string& name, const std::string& bytes) {
        auto p = dir.path / name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    };
    // a well-formed hand-made file: F32 (32 x 2) reads back
    auto good = write("good.gguf", tiny_gguf(3, 0, 0, 256));
    io::GgufFile g = io::GgufFile::open(good);
    BOOST_TEST((g.info("w").shape() == Shape{2, 32}));
    BOOST_TEST(g.get_string("general.architecture") == "llama");
    BOOST_TEST(io::is_gguf_file(good));
    BOOST_TEST(!io::is_gguf_file(models_dir + "pairs.jsonl"));

    std::string bad_magic = tiny_gguf(3, 0, 0, 256);
    bad_magic[0] = 'X';
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("magic.gguf", bad_magic)); }, {"magic.gguf", "not a GGUF file"}));
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("v1.gguf", tiny_gguf(1, 0, 0, 256))); }, {"v1.gguf", "version 1"}));
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("short.gguf", "GGUF")); }, {"short.gguf", "4 bytes"}));
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(dir.path / "missing.gguf"); }, {"missing.gguf", "no such file"}));
    // the data ends before the tensor does
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("data.gguf", tiny_gguf(3, 0, 0, 100))); }, {"data.gguf", "'w'", "truncated"}));
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("offset.gguf", tiny_gguf(3, 0, 64, 256))); }, {"offset.gguf", "'w'"}));
    BOOST_TEST(throws_naming([&] { io::GgufFile::open(write("align.gguf", tiny_gguf(3, 0, 4, 256))); }, {"align.gguf", "aligned"}));
    // a type this reader does not decode: opening works (its size is unknown), loading names the type
    io::GgufFile k = io::GgufFile::open(write("iq2.gguf", tiny_gguf(3, 16, 0, 256)));
    BOOST_TEST(throws_naming([&] { k.load("w"); }, {"iq2.gguf", "'w'", "IQ2_XXS"}));
    // a file that is not a llama model
    BOOST_TEST(throws_naming([&] { io::gguf_model_config(g); }, {"good.gguf", "llama.embedding_length"}));
}

// Every block format against llama.cpp's own dequantizer (gguf.quants) on random blocks.
BOOST_AUTO_TEST_CASE(block_formats_decode_like_ggml) {
    io::GgufFile f = io::GgufFile::open(gguf_dir + "quant_blocks.gguf");
    int checked = 0;
    for (std::string type : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}) {
        BOOST_TEST_CONTEXT(type) {
            Tensor got = f.load(type), want = f.load(type + ".expected");
            BOOST_TEST((got.shape() == want.shape()));
            auto g = got.to_vector<double>(), w = want.to_vector<double>();
            double worst = 0;
            for (std::size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(g[i] - w[i]) / std::max(std::abs(w[i]), 1e-6));
            BOOST_TEST(worst <= 1e-6, "worst relative difference " << worst);
            ++checked;
        }
    }
    BOOST_TEST(checked == 10);
}

// The byte-level BPE tokenizer a GGUF file carries encodes and decodes like the tokenizer.json it
// came from (ids from the `tokenizers` package, tests/data/tokenizers/expected.json).
BOOST_AUTO_TEST_CASE(tokenizer_from_gguf_matches_tokenizers) {
    std::ifstream in(std::string(DEVIANT_TEST_DATA_DIR) + "/tokenizers/expected.json");
    const json want = json::parse(in);
    for (auto [gguf, source, bos] : {std::tuple{"gpt2_tokenizer.gguf", "gpt2_style.json", false},  // bos: adds BOS
                                     std::tuple{"llama3_tokenizer.gguf", "llama3_style.json", true}}) {
        BOOST_TEST_CONTEXT(gguf) {
            io::GgufFile f = io::GgufFile::open(gguf_dir + gguf);
            BOOST_REQUIRE(gguf_has_tokenizer(f));
            const BpeTokenizer tok = tokenizer_from_gguf(f);
            int compared = 0;
            for (const json& c : want[source]["cases"]) {
                const std::string text = c["text"];
                if (text.find("<mask>") != std::string::npos) continue;  // lstrip in tokenizer.json: GGUF has no such flag
                const auto ids = c["ids"].get<std::vector<TokenId>>();
                BOOST_TEST(tok.encode(text, false) == ids, "'" << text << "'");
                BOOST_TEST(tok.decode(ids) == c["decoded"].get<std::string>(), "'" << text << "'");
                BOOST_TEST(tok.decode(ids, true) == c["decoded_skip_special"].get<std::string>(), "'" << text << "'");
                // with special tokens: the reference, minus a BOS it would double (as tokenizer.json does here)
                auto ref_special = c["ids_with_special"].get<std::vector<TokenId>>();
                if (bos && !ids.empty() && ids.front() == ref_special.front() && ref_special.size() > ids.size()) ref_special.erase(ref_special.begin());
                BOOST_TEST(tok.encode(text, true) == ref_special, "'" << text << "'");
                ++compared;
            }
            BOOST_TEST(compared >= 40);
        }
    }
    // A SentencePiece tokenizer or an unknown pre-tokenizer is refused, naming the file and the value.
    BOOST_TEST(throws_naming([] { tokenizer_from_gguf(io::GgufFile::open(gguf_dir + "llama_f32.gguf")); }, {"llama_f32.gguf", "tokenizer.ggml"}));
}

// Qwen2's pre-tokenizer ("qwen2": digits one by one) against the tokenizers package.
BOOST_AUTO_TEST_CASE(qwen2_pre_tokenizer_matches_tokenizers) {
    const BpeTokenizer tok = tokenizer_from_gguf(io::GgufFile::open(gguf_dir + "qwen2_tokenizer.gguf"));
    int digits = 0;
    for (const json& c : expected()["qwen2_tokenizer.gguf"]["cases"]) {
        const std::string text = c["text"];
        BOOST_TEST(tok.encode(text, false) == c["ids"].get<std::vector<TokenId>>(), "'" << text << "'");
        digits += text.find_first_of("0123456789") != std::string::npos;
    }
    BOOST_TEST(digits >= 3);  // cases where Qwen2 and Llama 3 split differently
}
