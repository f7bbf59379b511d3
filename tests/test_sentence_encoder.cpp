// Sentence encoder (BERT + pooling + normalisation): embeddings of three tiny random
// sentence-transformers folders and, when it is on disk, of all-MiniLM-L6-v2 match
// sentence-transformers (cosine >= 0.9999; fixtures made by tests/data/encoder/
// make_encoder_fixtures.py); batching, thread count and the padded calling convention do not
// change results; bad folders, configs and checkpoints give deviant::Error naming what is wrong.
#define BOOST_TEST_MODULE sentence_encoder
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>

#include "deviant/eval/sentence_encoder.hpp"
#include "expect_error.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using deviant::testing::throws_naming;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(DEVIANT_TEST_DATA_DIR) / "encoder";
const char* const kTiny[] = {"tiny_mean", "tiny_cls_max", "tiny_weighted"};

// Where downloaded models live: the DEVIANT_MODELS_DIR compile definition, else the environment
// variable of that name, else ~/.cache/deviant/models.
fs::path models_dir() {
#ifdef DEVIANT_MODELS_DIR
    return DEVIANT_MODELS_DIR;
#else
    if (const char* env = std::getenv("DEVIANT_MODELS_DIR")) return env;
    const char* home = std::getenv("HOME");
    return fs::path(home ? home : "/root") / ".cache" / "deviant" / "models";
#endif
}
const fs::path kMiniLm = models_dir() / "all-MiniLM-L6-v2";
bool have_minilm() { return fs::is_regular_file(kMiniLm / "model.safetensors") && fs::is_regular_file(kMiniLm / "modules.json"); }

const json& expected() {
    static const json j = [] {
        std::ifstream in(kDir / "expected.json");
        return json::parse(in);
    }();
    return j;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
    return ab / std::sqrt(aa * bb);
}

double norm(const std::vector<float>& a) {
    double s = 0;
    for (float v : a) s += double(v) * v;
    return std::sqrt(s);
}

// Every embedding matches its reference: same size, cosine >= 0.9999, same norm within 1e-3.
void check_embeddings(const std::vector<std::vector<float>>& got, const json& ref, const std::vector<std::string>& texts) {
    BOOST_TEST_REQUIRE(got.size() == ref.size());
    double lowest = 1.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const auto want = ref[i].get<std::vector<float>>();
        BOOST_TEST_CONTEXT("text " << i << " '" << texts[i].substr(0, 60) << "'") {
            BOOST_TEST_REQUIRE(got[i].size() == want.size());
            const double c = cosine(got[i], want);
            BOOST_TEST(c >= 0.9999, "cosine " << c);
            lowest = std::min(lowest, c);
            const double ng = norm(got[i]), nw = norm(want);
            BOOST_TEST(std::abs(ng - nw) <= 1e-3 * std::max(1.0, nw), "norm " << ng << " vs " << nw);
        }
    }
    BOOST_TEST_MESSAGE("lowest cosine " << std::setprecision(9) << lowest << " over " << got.size() << " texts");
}

fs::path copy_folder(const deviant::testing::TempDir& tmp, const fs::path& src, const std::string& name) {
    const fs::path dst = tmp.path / name;
    fs::copy(src, dst, fs::copy_options::recursive);
    return dst;
}

void edit_json(const fs::path& path, const std::function<void(json&)>& edit) {
    json j;
    {
        std::ifstream in(path);
        j = json::parse(in);
    }
    edit(j);
    std::ofstream(path) << j.dump(2);
}

}  // namespace

BOOST_AUTO_TEST_CASE(tiny_models_match_sentence_transformers) {
    const auto texts = expected()["tiny_texts"].get<std::vector<std::string>>();
    for (const char* name : kTiny) {
        BOOST_TEST_CONTEXT("model " << name) {
            const auto encoder = eval::SentenceEncoder::load(kDir / name);
            BOOST_TEST(encoder.dimension() == expected()[name][0].size());
            for (std::size_t batch : {1u, 3u, 32u}) {
                BOOST_TEST_CONTEXT("batch size " << batch) { check_embeddings(encoder.encode(texts, batch), expected()[name], texts); }
            }
        }
    }
    const auto mean = eval::SentenceEncoder::load(kDir / "tiny_mean");
    BOOST_TEST(mean.max_seq_length() == 24u);
    BOOST_TEST(mean.normalizes());
    BOOST_TEST((mean.pooling() == std::vector<eval::PoolingMode>{eval::PoolingMode::mean}));
    const auto cls_max = eval::SentenceEncoder::load(kDir / "tiny_cls_max");
    BOOST_TEST((cls_max.pooling() == std::vector<eval::PoolingMode>{eval::PoolingMode::cls, eval::PoolingMode::max}));
    BOOST_TEST(!cls_max.normalizes());
    BOOST_TEST(cls_max.dimension() == 96u);
}

BOOST_AUTO_TEST_CASE(minilm_matches_sentence_transformers) {
    if (!have_minilm()) {
        BOOST_TEST_MESSAGE("skipped: no all-MiniLM-L6-v2 under " << models_dir() << " (set DEVIANT_MODELS_DIR)");
        return;
    }
    const auto texts = expected()["minilm_texts"].get<std::vector<std::string>>();
    const auto encoder = eval::SentenceEncoder::load(kMiniLm);
    BOOST_TEST(encoder.dimension() == 384u);
    BOOST_TEST(encoder.max_seq_length() == 256u);
    std::size_t truncated = 0;
    for (const auto& t : texts) truncated += encoder.tokenizer().encode(t).size() > 256;
    BOOST_TEST(truncated >= 2u);
    const auto got = encoder.encode(texts, 8);
    check_embeddings(got, expected()["all-MiniLM-L6-v2"], texts);
    const auto one_by_one = encoder.encode(texts, 1);
    for (std::size_t i = 0; i < texts.size(); ++i) BOOST_TEST(cosine(got[i], one_by_one[i]) >= 0.999999);
    const Tensor t = encoder.encode_tensor(texts, 32);
    BOOST_TEST((t.shape() == Shape{std::int64_t(texts.size()), 384}));
}

BOOST_AUTO_TEST_CASE(threads_and_padded_forward_agree) {
    const auto texts = expected()["tiny_texts"].get<std::vector<std::string>>();
    auto encoder = eval::SentenceEncoder::load(kDir / "tiny_weighted", 2);
    const auto two = encoder.encode(texts, 4);
    encoder.set_threads(1);
    const auto one = encoder.encode(texts, 4);
    for (std::size_t i = 0; i < texts.size(); ++i) BOOST_TEST(cosine(one[i], two[i]) >= 0.999999);
#ifdef OPENBLAS_VERSION
    const int blas_threads = openblas_get_num_threads();
    encoder.set_threads(2);
    (void)encoder.encode(texts, 4);
    BOOST_TEST(openblas_get_num_threads() == blas_threads);  // restored after the forward pass
#endif

    // The padded (B, T) calling convention equals the packed one; padded rows are 0.
    const models::BertModel& model = encoder.model();
    const auto a = encoder.tokenizer().encode(texts[0]), b = encoder.tokenizer().encode(texts[5]);
    models::PackedSequences packed;
    const std::vector<TokenId> types_a(a.size(), 1);
    packed.add(a, types_a);
    packed.add(b);
    const Tensor hp = model.forward(packed);
    const std::int64_t T = std::int64_t(a.size()), C = model.config().hidden_size;
    std::vector<std::int64_t> ids(std::size_t(2 * T), 0), mask(std::size_t(2 * T), 0), types(std::size_t(2 * T), 0);
    for (std::int64_t t = 0; t < T; ++t) ids[std::size_t(t)] = a[std::size_t(t)], mask[std::size_t(t)] = 1, types[std::size_t(t)] = 1;
    for (std::size_t t = 0; t < b.size(); ++t) ids[std::size_t(T) + t] = b[t], mask[std::size_t(T) + t] = 1;
    const Tensor hb = model.forward(Tensor::from(ids, {2, T}), Tensor::from(mask, {2, T}), Tensor::from(types, {2, T}));
    BOOST_TEST((hb.shape() == Shape{2, T, C}));
    const auto vp = hp.to_vector<float>(), vb = hb.to_vector<float>();
    double worst = 0;
    for (std::int64_t r = 0; r < T + std::int64_t(b.size()); ++r)  // packed row r is padded row r: row 0 has no padding
        for (std::int64_t c = 0; c < C; ++c) worst = std::max(worst, double(std::abs(vp[std::size_t(r * C + c)] - vb[std::size_t(r * C + c)])));
    BOOST_TEST(worst <= 1e-4);
    for (std::int64_t t = std::int64_t(b.size()); t < T; ++t) BOOST_TEST(vb[std::size_t((T + t) * C)] == 0.0f);

    models::PackedSequences bad;
    bad.add(std::vector<TokenId>{2, 100000, 3});
    BOOST_TEST(throws_naming([&] { model.forward(bad); }, {"token id 100000", "vocabulary of 420"}));
    models::PackedSequences too_long;
    too_long.add(std::vector<TokenId>(65, 5));
    BOOST_TEST(throws_naming([&] { model.forward(too_long); }, {"65 tokens", "max_position_embeddings 64"}));
    BOOST_TEST(encoder.encode({}).empty());
}

BOOST_AUTO_TEST_CASE(checkpoint_name_variants_load) {
    // "bert." prefixed names and LayerNorm gamma/beta, as some checkpoints store them.
    deviant::testing::TempDir tmp("deviant_encoder_names");
    const fs::path dir = copy_folder(tmp, kDir / "tiny_mean", "renamed");
    const auto file = io::SafetensorsFile::open(kDir / "tiny_mean" / "model.safetensors");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& name : file.names()) {
        std::string renamed = "bert." + name;
        if (renamed.ends_with("LayerNorm.weight")) renamed.replace(renamed.size() - 6, 6, "gamma");
        if (renamed.ends_with("LayerNorm.bias")) renamed.replace(renamed.size() - 4, 4, "beta");
        tensors.emplace_back(renamed, file.load(name).clone());
    }
    tensors.emplace_back("cls.predictions.bias", Tensor::zeros({420}));  // unused extras are ignored
    io::save_safetensors(dir / "model.safetensors", tensors);
    const auto texts = expected()["tiny_texts"].get<std::vector<std::string>>();
    check_embeddings(eval::SentenceEncoder::load(dir).encode(texts), expected()["tiny_mean"], texts);
}

BOOST_AUTO_TEST_CASE(bad_folders_give_errors) {
    deviant::testing::TempDir tmp("deviant_encoder_bad");
    const auto variant = [&](const std::string& name) { return copy_folder(tmp, kDir / "tiny_mean", name); };

    BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(tmp.path / "absent"); }, {"modules.json", "cannot open"}));
    {
        const fs::path d = variant("no_modules");
        fs::remove(d / "modules.json");
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"no_modules/modules.json", "cannot open"}));
    }
    {
        const fs::path d = variant("dense");
        edit_json(d / "modules.json", [](json& j) {
            j.push_back({{"idx", 3}, {"name", "3"}, {"path", "3_Dense"}, {"type", "sentence_transformers.models.Dense"}});
        });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"modules.json", "sentence_transformers.models.Dense", "not supported"}));
    }
    {
        const fs::path d = variant("modules_not_array");
        std::ofstream(d / "modules.json") << "{\"a\": 1}";
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"modules.json", "array"}));
    }
    {
        const fs::path d = variant("activation");
        edit_json(d / "config.json", [](json& j) { j["hidden_act"] = "swish"; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"activation/config.json", "hidden_act", "swish"}));
    }
    {
        const fs::path d = variant("positions");
        edit_json(d / "config.json", [](json& j) { j["position_embedding_type"] = "relative_key"; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"config.json", "position_embedding_type", "relative_key"}));
    }
    {
        const fs::path d = variant("model_type");
        edit_json(d / "config.json", [](json& j) { j["model_type"] = "roberta"; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"config.json", "model_type", "roberta"}));
    }
    {
        const fs::path d = variant("heads");
        edit_json(d / "config.json", [](json& j) { j["num_attention_heads"] = 5; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"config.json", "hidden_size", "num_attention_heads"}));
    }
    {
        const fs::path d = variant("missing_field");
        edit_json(d / "config.json", [](json& j) { j.erase("intermediate_size"); });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"config.json", "intermediate_size"}));
    }
    {
        const fs::path d = variant("shape");
        edit_json(d / "config.json", [](json& j) { j["intermediate_size"] = 64; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"model.safetensors", "intermediate.dense.weight", "(72, 32)", "(64, 32)"}));
    }
    {
        const fs::path d = variant("truncated");
        const auto size = fs::file_size(d / "model.safetensors");
        fs::resize_file(d / "model.safetensors", size / 2);
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"truncated/model.safetensors"}));
    }
    {
        const fs::path d = variant("missing_tensor");
        const auto file = io::SafetensorsFile::open(kDir / "tiny_mean" / "model.safetensors");
        std::vector<std::pair<std::string, Tensor>> tensors;
        for (const auto& name : file.names())
            if (name != "encoder.layer.1.output.dense.bias") tensors.emplace_back(name, file.load(name).clone());
        io::save_safetensors(d / "model.safetensors", tensors);
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"encoder.layer.1.output.dense.bias", "missing"}));
    }
    {
        const fs::path d = variant("pooling");
        edit_json(d / "1_Pooling" / "config.json", [](json& j) { j["pooling_mode"] = "median"; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"1_Pooling/config.json", "pooling_mode", "median"}));
    }
    {
        const fs::path d = variant("pooling_dim");
        edit_json(d / "1_Pooling" / "config.json", [](json& j) { j["embedding_dimension"] = 31; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"1_Pooling/config.json", "embedding_dimension", "32"}));
    }
    {
        const fs::path d = variant("no_tokenizer");
        fs::remove(d / "tokenizer.json");
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"no_tokenizer", "vocab.txt"}));
    }
    {
        const fs::path d = variant("bad_settings");
        edit_json(d / "sentence_bert_config.json", [](json& j) { j["max_seq_length"] = "long"; });
        BOOST_TEST(throws_naming([&] { eval::SentenceEncoder::load(d); }, {"sentence_bert_config.json", "max_seq_length"}));
    }
}
