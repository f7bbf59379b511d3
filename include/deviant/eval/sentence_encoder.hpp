// deviant/eval/sentence_encoder.hpp — a sentence-transformers model folder (a BERT encoder, its
// WordPiece tokenizer, pooling, optional L2 normalisation) as a text -> vector function.
// Why: deviation weights and diversity metrics want neural sentence embeddings
// (all-MiniLM-L6-v2 and similar), computed in-process and fast.
//
// Folder layout, as sentence-transformers saves it: modules.json lists the modules in order:
//   Transformer  (path "" or a sub-folder): config.json + model.safetensors (BertModel),
//                tokenizer.json or vocab.txt, sentence_bert_config.json {max_seq_length,
//                do_lower_case}; without max_seq_length there, tokenizer_config.json's
//                model_max_length (capped at max_position_embeddings) is the limit
//   Pooling      (e.g. "1_Pooling"): config.json with pooling_mode (a name or a list) or the
//                older pooling_mode_*_tokens switches: cls, max, mean, mean_sqrt_len_tokens,
//                weightedmean, lasttoken; several modes are concatenated in the given order
//   Normalize    (optional): x / max(||x||, 1e-12)
// Other modules (Dense, ...) are refused naming modules.json and the module type.
//
// encode(texts, batch_size): texts are tokenized (truncated to max_seq_length, [CLS]/[SEP]
// kept), sorted by token count, and run batch_size at a time; each batch is packed without
// padding (models/bert.hpp), pooled per text and written back in the input order.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"
#include "deviant/core/tensor.hpp"
#include "deviant/models/bert.hpp"
#include "deviant/tokenizer/wordpiece.hpp"

namespace deviant::eval {

enum class PoolingMode : std::uint8_t { cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken };

inline std::optional<PoolingMode> parse_pooling_mode(std::string_view name) {
    if (name == "cls") return PoolingMode::cls;
    if (name == "max") return PoolingMode::max;
    if (name == "mean") return PoolingMode::mean;
    if (name == "mean_sqrt_len_tokens") return PoolingMode::mean_sqrt_len_tokens;
    if (name == "weightedmean") return PoolingMode::weightedmean;
    if (name == "lasttoken") return PoolingMode::lasttoken;
    return std::nullopt;
}

// Pools the hidden states of one sequence, rows (T, C) of `hidden`, into out (modes.size() * C).
// An empty sequence pools to zeros.
inline void pool_sequence(const float* hidden, std::int64_t T, std::int64_t C, const std::vector<PoolingMode>& modes, float* out) {
    for (std::size_t m = 0; m < modes.size(); ++m) {
        float* o = out + std::int64_t(m) * C;
        if (T == 0) {
            std::fill(o, o + C, 0.0f);
            continue;
        }
        switch (modes[m]) {
            case PoolingMode::cls: std::copy(hidden, hidden + C, o); break;
            case PoolingMode::lasttoken: std::copy(hidden + (T - 1) * C, hidden + T * C, o); break;
            case PoolingMode::max:
                std::copy(hidden, hidden + C, o);
                for (std::int64_t t = 1; t < T; ++t)
                    for (std::int64_t c = 0; c < C; ++c) o[c] = std::max(o[c], hidden[t * C + c]);
                break;
            case PoolingMode::mean:
            case PoolingMode::mean_sqrt_len_tokens:
            case PoolingMode::weightedmean: {
                std::fill(o, o + C, 0.0f);
                double weight_sum = 0.0;
                for (std::int64_t t = 0; t < T; ++t) {
                    const float w = modes[m] == PoolingMode::weightedmean ? float(t + 1) : 1.0f;
                    weight_sum += w;
                    for (std::int64_t c = 0; c < C; ++c) o[c] += w * hidden[t * C + c];
                }
                const float denominator = float(modes[m] == PoolingMode::mean_sqrt_len_tokens ? std::sqrt(weight_sum) : weight_sum);
                for (std::int64_t c = 0; c < C; ++c) o[c] /= std::max(denominator, 1e-9f);
                break;
            }
        }
    }
}

class SentenceEncoder {
public:
    // Loads a sentence-transformers folder. threads: worker threads of the encoder (0: one per
    // core), used for tokenization and the whole forward pass (see models/bert.hpp).
    static SentenceEncoder load(const std::filesystem::path& dir, unsigned threads = 0) {
        namespace fs = std::filesystem;
        const fs::path modules_path = dir / "modules.json";
        const std::string mfile = modules_path.string();
        const nlohmann::json modules = read_json(modules_path, "sentence-transformers modules file");
        DEVIANT_REQUIRE(modules.is_array() && !modules.empty(), "{}: expected a non-empty array of modules", mfile);
        std::vector<std::pair<std::int64_t, const nlohmann::json*>> order;
        for (std::size_t i = 0; i < modules.size(); ++i) {
            const auto& m = modules[i];
            DEVIANT_REQUIRE(m.is_object() && m.contains("type") && m["type"].is_string(), "{}: module {} has no 'type' string", mfile, i);
            const std::int64_t idx = m.contains("idx") && m["idx"].is_number_integer() ? m["idx"].get<std::int64_t>() : std::int64_t(i);
            order.emplace_back(idx, &m);
        }
        std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

        std::optional<fs::path> transformer_dir, pooling_dir;
        bool normalize = false;
        for (std::size_t i = 0; i < order.size(); ++i) {
            const nlohmann::json& m = *order[i].second;
            const std::string type = m["type"].get<std::string>();
            const std::string short_type = type.substr(type.rfind('.') == std::string::npos ? 0 : type.rfind('.') + 1);
            std::string rel = m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>() : std::string();
            const fs::path module_dir = rel.empty() ? dir : dir / rel;
            if (short_type == "Transformer") {
                DEVIANT_REQUIRE(i == 0 && !transformer_dir, "{}: the Transformer module must come first, and once", mfile);
                transformer_dir = module_dir;
            } else if (short_type == "Pooling") {
                DEVIANT_REQUIRE(transformer_dir && !pooling_dir && !normalize, "{}: module {} ('{}') must follow the Transformer module", mfile, i,
                                type);
                pooling_dir = module_dir;
            } else if (short_type == "Normalize") {
                DEVIANT_REQUIRE(pooling_dir.has_value(), "{}: module {} ('{}') must follow a Pooling module", mfile, i, type);
                normalize = true;
            } else {
                fail("{}: module {} has type '{}', which is not supported (supported: Transformer, Pooling, Normalize)", mfile, i, type);
            }
        }
        DEVIANT_REQUIRE(transformer_dir.has_value(), "{}: no Transformer module", mfile);
        DEVIANT_REQUIRE(pooling_dir.has_value(), "{}: no Pooling module", mfile);

        SentenceEncoder e;
        e.model_ = std::make_shared<models::BertModel>(models::BertModel::from_pretrained(*transformer_dir, threads));
        e.tokenizer_ = std::make_shared<WordPieceTokenizer>(WordPieceTokenizer::from_directory(*transformer_dir));
        e.normalize_ = normalize;
        e.read_transformer_settings(*transformer_dir);
        e.read_pooling(*pooling_dir / "config.json");
        return e;
    }

    // One embedding per text, in the input order.
    std::vector<std::vector<float>> encode(const std::vector<std::string>& texts, std::size_t batch_size = 32) const {
        const Tensor t = encode_tensor(texts, batch_size);
        const std::size_t dim = dimension();
        std::vector<std::vector<float>> out(texts.size());
        const float* p = t.data<float>();
        for (std::size_t i = 0; i < texts.size(); ++i) out[i].assign(p + i * dim, p + (i + 1) * dim);
        return out;
    }

    // Embeddings as a (N, dimension) float32 tensor.
    Tensor encode_tensor(const std::vector<std::string>& texts, std::size_t batch_size = 32) const {
        DEVIANT_REQUIRE(batch_size > 0, "SentenceEncoder::encode: batch_size must be positive");
        const std::int64_t C = model_->config().hidden_size, dim = std::int64_t(dimension());
        Tensor result = Tensor::empty({std::int64_t(texts.size()), dim});
        if (texts.empty()) return result;
        std::vector<std::vector<TokenId>> ids(texts.size());
        model_->workers().run(texts.size(), [&](std::size_t i) noexcept { ids[i] = tokenizer_->encode(texts[i], true, max_seq_length_); });
        std::vector<std::size_t> order(texts.size());
        std::iota(order.begin(), order.end(), std::size_t(0));
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a].size() > ids[b].size(); });
        float* out = result.data<float>();
        for (std::size_t start = 0; start < order.size(); start += batch_size) {
            const std::size_t end = std::min(order.size(), start + batch_size);
            models::PackedSequences batch;
            for (std::size_t k = start; k < end; ++k) batch.add(ids[order[k]], tokenizer_->type_ids(ids[order[k]].size()));
            const Tensor hidden = model_->forward(batch);
            const float* h = hidden.data<float>();
            for (std::size_t k = start; k < end; ++k) {
                const std::size_t b = k - start;
                float* row = out + std::int64_t(order[k]) * dim;
                pool_sequence(h + batch.offsets[b] * C, batch.length(b), C, pooling_, row);
                if (normalize_) {
                    double sq = 0.0;
                    for (std::int64_t c = 0; c < dim; ++c) sq += double(row[c]) * row[c];
                    const float inv = 1.0f / std::max(float(std::sqrt(sq)), 1e-12f);
                    for (std::int64_t c = 0; c < dim; ++c) row[c] *= inv;
                }
            }
        }
        return result;
    }

    std::size_t dimension() const { return pooling_.size() * std::size_t(model_->config().hidden_size); }
    std::size_t max_seq_length() const { return max_seq_length_; }
    const std::vector<PoolingMode>& pooling() const { return pooling_; }
    bool normalizes() const { return normalize_; }
    const WordPieceTokenizer& tokenizer() const { return *tokenizer_; }
    const models::BertModel& model() const { return *model_; }
    // Worker threads for the fused passes and tokenization (0: one per core).
    void set_threads(unsigned threads) { model_->set_threads(threads); }

private:
    SentenceEncoder() = default;

    static nlohmann::json read_json(const std::filesystem::path& path, const char* what) {
        std::ifstream in(path, std::ios::binary);
        DEVIANT_REQUIRE(in.good(), "{}: cannot open the {}", path.string(), what);
        try {
            return nlohmann::json::parse(in);
        } catch (const nlohmann::json::exception& e) {
            fail("{}: not valid JSON: {}", path.string(), e.what());
        }
    }

    // max_seq_length: sentence_bert_config.json's, else tokenizer_config.json's model_max_length
    // (where newer sentence-transformers keep it), capped at max_position_embeddings.
    void read_transformer_settings(const std::filesystem::path& dir) {
        const std::int64_t positions = model_->config().max_position_embeddings;
        max_seq_length_ = std::size_t(positions);
        const auto settings = dir / "sentence_bert_config.json";
        const auto tokenizer_config = dir / "tokenizer_config.json";
        std::error_code ec;
        if (std::filesystem::is_regular_file(tokenizer_config, ec)) {
            const nlohmann::json j = read_json(tokenizer_config, "tokenizer config");
            if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer() &&
                j["model_max_length"].get<std::int64_t>() > 0)
                max_seq_length_ = std::size_t(std::min(j["model_max_length"].get<std::int64_t>(), positions));
        }
        if (std::filesystem::is_regular_file(settings, ec)) {
            const std::string file = settings.string();
            const nlohmann::json j = read_json(settings, "sentence-transformers settings");
            DEVIANT_REQUIRE(j.is_object(), "{}: expected a JSON object", file);
            if (j.contains("max_seq_length") && !j["max_seq_length"].is_null()) {
                DEVIANT_REQUIRE(j["max_seq_length"].is_number_integer() && j["max_seq_length"].get<std::int64_t>() > 0,
                                "{}: field 'max_seq_length' must be a positive integer, got {}", file, j["max_seq_length"].dump());
                max_seq_length_ = std::size_t(std::min(j["max_seq_length"].get<std::int64_t>(), positions));
            }
            if (j.contains("do_lower_case") && !j["do_lower_case"].is_null()) {
                DEVIANT_REQUIRE(j["do_lower_case"].is_boolean(), "{}: field 'do_lower_case' must be true or false", file);
                if (j["do_lower_case"].get<bool>() && !tokenizer_->normalizer().lowercase) {
                    // lowercase the input first, keeping the tokenizer's accent handling
                    BertNormalizerOptions n = tokenizer_->normalizer();
                    n.strip_accents = n.enabled && n.strips_accents();
                    if (!n.enabled) n = BertNormalizerOptions{true, false, false, false, true};
                    n.lowercase = true;
                    tokenizer_->set_normalizer(n);
                }
            }
        }
        DEVIANT_REQUIRE(max_seq_length_ >= tokenizer_->post_template().added(), "{}: max_seq_length {} cannot hold the special tokens",
                        settings.string(), max_seq_length_);
    }

    void read_pooling(const std::filesystem::path& config) {
        const std::string file = config.string();
        const nlohmann::json j = read_json(config, "pooling config");
        DEVIANT_REQUIRE(j.is_object(), "{}: expected a JSON object", file);
        for (const char* key : {"word_embedding_dimension", "embedding_dimension"})
            if (j.contains(key) && !j[key].is_null())
                DEVIANT_REQUIRE(j[key].is_number_integer() && j[key].get<std::int64_t>() == model_->config().hidden_size,
                                "{}: field '{}' is {}, but the model's hidden size is {}", file, key, j[key].dump(), model_->config().hidden_size);
        if (j.contains("pooling_mode") && !j["pooling_mode"].is_null()) {
            const auto& m = j["pooling_mode"];
            std::vector<std::string> names;
            if (m.is_string()) names.push_back(m.get<std::string>());
            else if (m.is_array())
                for (const auto& e : m) {
                    DEVIANT_REQUIRE(e.is_string(), "{}: field 'pooling_mode' must hold mode names, got {}", file, e.dump());
                    names.push_back(e.get<std::string>());
                }
            else fail("{}: field 'pooling_mode' must be a mode name or a list of names, got {}", file, m.dump());
            for (const auto& n : names) {
                auto mode = parse_pooling_mode(n);
                DEVIANT_REQUIRE(mode.has_value(), "{}: field 'pooling_mode' holds '{}' (known: cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken)",
                                file, n);
                pooling_.push_back(*mode);
            }
        } else {
            static constexpr std::pair<const char*, PoolingMode> legacy[] = {
                {"pooling_mode_cls_token", PoolingMode::cls},
                {"pooling_mode_max_tokens", PoolingMode::max},
                {"pooling_mode_mean_tokens", PoolingMode::mean},
                {"pooling_mode_mean_sqrt_len_tokens", PoolingMode::mean_sqrt_len_tokens},
                {"pooling_mode_weightedmean_tokens", PoolingMode::weightedmean},
                {"pooling_mode_lasttoken", PoolingMode::lasttoken},
            };
            for (const auto& [key, mode] : legacy) {
                if (!j.contains(key) || j[key].is_null()) continue;
                DEVIANT_REQUIRE(j[key].is_boolean(), "{}: field '{}' must be true or false", file, key);
                if (j[key].get<bool>()) pooling_.push_back(mode);
            }
            if (pooling_.empty()) pooling_.push_back(PoolingMode::mean);
        }
        DEVIANT_REQUIRE(!pooling_.empty(), "{}: field 'pooling_mode' names no mode", file);
    }

    std::shared_ptr<models::BertModel> model_;
    std::shared_ptr<WordPieceTokenizer> tokenizer_;
    std::vector<PoolingMode> pooling_;
    bool normalize_ = false;
    std::size_t max_seq_length_ = 512;
};

}  // namespace deviant::eval
