// deviant/tokenizer/chat_jinja.hpp — a model's own chat template, rendered as its reference
// tokenizer renders it.
// Why: a checkpoint ships its prompt format as a Jinja2 program (tokenizer_config.json
// "chat_template", or GGUF "tokenizer.chat_template"); using that program, rather than a fixed
// format, is the only way prompts match what the model was trained on.
//
// render() gives the template the variables the reference renderer gives it: messages (a list of
// {role, content}), add_generation_prompt, bos_token and eos_token (undefined when the model has
// none), tools and documents (none unless `extra` provides them), and every member of `extra`
// (date_string, enable_thinking, ...; they may override bos_token/eos_token/tools/documents).
// The rendered text contains whatever special-token text the template writes (often BOS), so
// encode it without adding special tokens again.
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>

#include "deviant/io/gguf.hpp"
#include "deviant/tokenizer/chat_template.hpp"
#include "deviant/tokenizer/jinja.hpp"

namespace deviant {

class ChatTemplate {
public:
    // Parses `source` (syntax errors throw here); `origin` names it in error messages.
    ChatTemplate(std::string source, std::optional<std::string> bos_token, std::optional<std::string> eos_token,
                 std::string origin = "chat template", jinja::Limits limits = {})
        : source_(std::move(source)), bos_token_(std::move(bos_token)), eos_token_(std::move(eos_token)), origin_(std::move(origin)),
          program_(std::make_shared<const jinja::Template>(source_, origin_, limits)) {}

    const std::string& source() const { return source_; }
    const std::optional<std::string>& bos_token() const { return bos_token_; }
    const std::optional<std::string>& eos_token() const { return eos_token_; }
    const std::string& origin() const { return origin_; }

    // The prompt text for `messages`; with add_generation_prompt the template's opening of an
    // assistant turn is appended (when the template has one).
    std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                       const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const {
        nlohmann::ordered_json list = nlohmann::ordered_json::array();
        for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
        return render_json(list, add_generation_prompt, extra);
    }

    // The same for messages given as JSON (a list of objects; tool calls, tool results and other
    // members pass through to the template as they are).
    std::string render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                            const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const {
        DEVIANT_REQUIRE(messages.is_array(), "{}: messages must be a JSON list, got {}", origin_, messages.type_name());
        DEVIANT_REQUIRE(extra.is_object() || extra.is_null(), "{}: extra template variables must be a JSON object, got {}", origin_,
                        extra.type_name());
        nlohmann::ordered_json vars = nlohmann::ordered_json::object();
        if (bos_token_) vars["bos_token"] = *bos_token_;
        if (eos_token_) vars["eos_token"] = *eos_token_;
        vars["tools"] = nullptr;
        vars["documents"] = nullptr;
        if (extra.is_object()) {
            for (const auto& [k, v] : extra.items()) {
                DEVIANT_REQUIRE(k != "messages" && k != "add_generation_prompt",
                                "{}: '{}' cannot be passed as an extra template variable (render() sets it)", origin_, k);
                vars[k] = v;
            }
        }
        vars["messages"] = messages;
        vars["add_generation_prompt"] = add_generation_prompt;
        return program_->render(vars);
    }

private:
    std::string source_;
    std::optional<std::string> bos_token_, eos_token_;
    std::string origin_;
    std::shared_ptr<const jinja::Template> program_;
};

namespace detail {

// A special token in tokenizer_config.json: a string, {"content": ...} (a serialized
// AddedToken), or null/absent (no such token).
inline std::optional<std::string> special_token_text(const nlohmann::json& config, const char* key, const std::string& file) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) {
        const auto c = it->find("content");
        DEVIANT_REQUIRE(c != it->end() && c->is_string(), "{}: '{}' is an object without a string 'content'", file, key);
        return c->get<std::string>();
    }
    fail("{}: '{}' must be a string, an object with 'content', or null; it is {}", file, key, it->type_name());
}

inline std::string read_text_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    DEVIANT_REQUIRE(in, "{}: cannot open", path.string());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace detail

// The chat template of a Hugging Face checkpoint's tokenizer_config.json: "chat_template" is the
// template, or a list of {"name", "template"} of which "default" is used; when the file has no
// "chat_template", a chat_template.jinja beside it is used. BOS/EOS come from "bos_token" and
// "eos_token".
inline ChatTemplate chat_template_from_tokenizer_config(const std::filesystem::path& path) {
    const std::string file = path.string();
    DEVIANT_REQUIRE(std::filesystem::is_regular_file(path), "{}: no such file", file);
    nlohmann::json config;
    try {
        config = nlohmann::json::parse(detail::read_text_file(path));
    } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", file, e.what());
    }
    DEVIANT_REQUIRE(config.is_object(), "{}: the top level must be a JSON object", file);
    std::string source, origin = file;
    const auto it = config.find("chat_template");
    if (it == config.end() || it->is_null()) {
        const auto sibling = path.parent_path() / "chat_template.jinja";
        DEVIANT_REQUIRE(std::filesystem::is_regular_file(sibling), "{}: has no 'chat_template', and there is no {} beside it", file,
                        sibling.filename().string());
        source = detail::read_text_file(sibling);
        origin = sibling.string();
    } else if (it->is_string()) {
        source = it->get<std::string>();
    } else if (it->is_array()) {
        std::string names;
        bool found = false;
        for (const auto& entry : *it) {
            DEVIANT_REQUIRE(entry.is_object() && entry.contains("name") && entry["name"].is_string() && entry.contains("template") &&
                                entry["template"].is_string(),
                            "{}: every entry of 'chat_template' must be {{\"name\": string, \"template\": string}}", file);
            const std::string name = entry["name"].get<std::string>();
            names += (names.empty() ? "'" : ", '") + name + "'";
            if (name == "default") {
                source = entry["template"].get<std::string>();
                found = true;
            }
        }
        DEVIANT_REQUIRE(found, "{}: 'chat_template' lists several templates ({}) and none is named 'default'", file, names);
        origin = file + " (chat_template 'default')";
    } else {
        fail("{}: 'chat_template' must be a string or a list of named templates; it is {}", file, it->type_name());
    }
    return ChatTemplate(std::move(source), detail::special_token_text(config, "bos_token", file),
                        detail::special_token_text(config, "eos_token", file), origin);
}

// The chat template of a GGUF file: "tokenizer.chat_template", with BOS/EOS the texts of
// tokenizer.ggml.bos_token_id / eos_token_id in tokenizer.ggml.tokens (absent ids: no token).
inline ChatTemplate chat_template_from_gguf(const io::GgufFile& gguf) {
    const std::string file = gguf.path().string();
    const io::GgufValue* tmpl = gguf.find("tokenizer.chat_template");
    DEVIANT_REQUIRE(tmpl, "{}: has no chat template (metadata 'tokenizer.chat_template' is missing)", file);
    DEVIANT_REQUIRE(tmpl->as_string(), "{}: metadata 'tokenizer.chat_template' is not a string", file);
    const auto token = [&](const char* key) -> std::optional<std::string> {
        const io::GgufValue* id = gguf.find(key);
        if (!id) return std::nullopt;
        const auto i = id->as_int();
        DEVIANT_REQUIRE(i, "{}: metadata '{}' is not an integer", file, key);
        const io::GgufValue* tokens = gguf.find("tokenizer.ggml.tokens");
        DEVIANT_REQUIRE(tokens && tokens->as_array(), "{}: metadata '{}' is set but 'tokenizer.ggml.tokens' is missing", file, key);
        const auto& list = *tokens->as_array();
        DEVIANT_REQUIRE(*i >= 0 && std::size_t(*i) < list.size(), "{}: metadata '{}' is {}, outside the {} tokens of tokenizer.ggml.tokens",
                        file, key, *i, list.size());
        const std::string* text = list[std::size_t(*i)].as_string();
        DEVIANT_REQUIRE(text, "{}: token {} of tokenizer.ggml.tokens is not a string", file, *i);
        return *text;
    };
    return ChatTemplate(*tmpl->as_string(), token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"),
                        file + " (tokenizer.chat_template)");
}

// The chat template that goes with a tokenizer, when there is one: a GGUF file's own, or the
// tokenizer_config.json (or chat_template.jinja) beside a tokenizer.json. nullptr when the model
// ships none (callers then use the fixed formats of tokenizer/chat_template.hpp). A template that
// is present but broken is an error, not silently replaced.
inline std::shared_ptr<const ChatTemplate> find_chat_template(const std::filesystem::path& tokenizer_path) {
    std::error_code ec;
    if (tokenizer_path.empty()) return nullptr;
    if (io::is_gguf_file(tokenizer_path)) {
        const io::GgufFile f = io::GgufFile::open(tokenizer_path);
        if (!f.find("tokenizer.chat_template")) return nullptr;
        return std::make_shared<const ChatTemplate>(chat_template_from_gguf(f));
    }
    const auto dir = std::filesystem::is_directory(tokenizer_path, ec) ? tokenizer_path : tokenizer_path.parent_path();
    const auto config = dir / "tokenizer_config.json";
    if (!std::filesystem::is_regular_file(config, ec)) return nullptr;
    bool has = std::filesystem::is_regular_file(dir / "chat_template.jinja", ec);
    if (!has) {
        const nlohmann::json j = nlohmann::json::parse(detail::read_text_file(config), nullptr, /*allow_exceptions=*/false);
        has = j.is_object() && j.contains("chat_template") && !j["chat_template"].is_null();
    }
    return has ? std::make_shared<const ChatTemplate>(chat_template_from_tokenizer_config(config)) : nullptr;
}

}  // namespace deviant
