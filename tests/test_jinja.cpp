// Chat templates in Jinja2: real templates (tests/data/chat_templates/*.jinja) render every
// conversation byte for byte as the reference renderer does, or refuse it with the same
// raise_exception message (fixtures made by make_chat_template_fixtures.py); language cases
// written for this test match the reference environment; hand-written checks of whitespace
// control, scoping and values; the tokenizer_config.json and GGUF loaders; and malformed or
// runaway templates give deviant::Error, never a crash.
#define BOOST_TEST_MODULE jinja
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "deviant/tokenizer/chat_jinja.hpp"

using namespace deviant;
using nlohmann::ordered_json;

namespace {

const std::filesystem::path kDir = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "chat_templates";

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    BOOST_REQUIRE_MESSAGE(in, "cannot open " << p);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const ordered_json& expected() {
    static const ordered_json j = ordered_json::parse(read_file(kDir / "expected.json"));
    return j;
}

std::optional<std::string> optional_string(const ordered_json& j) {
    if (j.is_null()) return std::nullopt;
    return j.get<std::string>();
}

ChatTemplate load_fixture_template(const std::string& name) {
    const ordered_json& t = expected()["templates"][name];
    return ChatTemplate(read_file(kDir / t["file"].get<std::string>()), optional_string(t["bos_token"]), optional_string(t["eos_token"]),
                        name);
}

// Messages that are plain {role, content} strings, as ChatMessage values (nullopt otherwise).
std::optional<std::vector<ChatMessage>> plain_messages(const ordered_json& messages) {
    std::vector<ChatMessage> out;
    for (const auto& m : messages) {
        if (m.size() != 2 || !m.contains("role") || !m.contains("content") || !m["content"].is_string()) return std::nullopt;
        out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    return out;
}

std::string render(std::string_view tmpl, const ordered_json& vars = ordered_json::object(), jinja::Limits limits = {}) {
    return jinja::Template(tmpl, "test template", limits).render(vars);
}

// The message of the deviant::Error `f` throws ("" and a failed check when it throws none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        BOOST_ERROR("expected deviant::Error, got another exception: " << e.what());
        return e.what();
    }
    BOOST_ERROR("expected deviant::Error, nothing was thrown");
    return "";
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

std::filesystem::path temp_dir(const std::string& name) {
    const auto dir = std::filesystem::temp_directory_path() / "deviant_test_jinja" / name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

void write_file(const std::filesystem::path& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary);
    out << content;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Real templates against the reference renderer.

BOOST_AUTO_TEST_CASE(real_templates_render_as_the_reference_does) {
    const ordered_json& cases = expected()["cases"];
    BOOST_REQUIRE_GE(cases.size(), 100u);
    std::map<std::string, ChatTemplate> templates;
    std::size_t rendered = 0, refused = 0, failed = 0;
    for (const auto& c : cases) {
        const std::string name = c["template"].get<std::string>();
        const std::string conv = c["conversation"].get<std::string>();
        const bool agp = c["add_generation_prompt"].get<bool>();
        BOOST_TEST_CONTEXT(name << " / " << conv << " / add_generation_prompt=" << agp << " / extra " << c["extra"].dump()) {
            if (!templates.count(name)) templates.emplace(name, load_fixture_template(name));
            const ChatTemplate& tmpl = templates.at(name);
            const ordered_json& messages = expected()["conversations"][conv];
            if (c.contains("expected")) {
                const std::string want = c["expected"].get<std::string>();
                BOOST_CHECK_EQUAL(tmpl.render_json(messages, agp, c["extra"]), want);
                if (const auto plain = plain_messages(messages)) BOOST_CHECK_EQUAL(tmpl.render(*plain, agp, c["extra"]), want);
                ++rendered;
            } else if (c.contains("raised")) {
                try {
                    tmpl.render_json(messages, agp, c["extra"]);
                    BOOST_ERROR("the template rendered; the reference refused with: " << c["raised"].get<std::string>());
                } catch (const jinja::TemplateRaised& e) {
                    BOOST_CHECK_EQUAL(e.message(), c["raised"].get<std::string>());
                    BOOST_CHECK(contains(e.what(), name + ", line "));
                }
                ++refused;
            } else {
                const std::string what = error_of([&] { tmpl.render_json(messages, agp, c["extra"]); });
                BOOST_CHECK(contains(what, name + ", line "));
                ++failed;
            }
        }
    }
    BOOST_TEST_MESSAGE(rendered << " renderings, " << refused << " refusals, " << failed << " template errors checked");
    BOOST_CHECK_GE(refused, 10u);
    // Every template of the task is there.
    for (const char* t : {"smollm2-135m-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "llama-3.2-3b-instruct",
                          "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "llama-2-7b-chat", "zephyr-7b-beta", "phi-3-mini-4k-instruct"})
        BOOST_CHECK_MESSAGE(templates.count(t), "no cases for " << t);
}

BOOST_AUTO_TEST_CASE(language_cases_match_the_reference_environment) {
    const ordered_json& cases = expected()["language"];
    BOOST_REQUIRE_GE(cases.size(), 100u);
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c["name"].get<std::string>() << ": " << c["template"].get<std::string>()) {
            const std::string tmpl = c["template"].get<std::string>();
            if (c.contains("expected")) {
                try {
                    BOOST_CHECK_EQUAL(render(tmpl, c["variables"]), c["expected"].get<std::string>());
                } catch (const std::exception& e) {
                    BOOST_ERROR("threw: " << e.what());
                }
            } else if (c.contains("raised")) {
                try {
                    render(tmpl, c["variables"]);
                    BOOST_ERROR("rendered; the reference raised " << c["raised"]);
                } catch (const jinja::TemplateRaised& e) {
                    BOOST_CHECK_EQUAL(e.message(), c["raised"].get<std::string>());
                }
            } else {
                const std::string what = error_of([&] { render(tmpl, c["variables"]); });
                BOOST_CHECK(contains(what, "test template, line "));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written checks (the same semantics, readable here).

BOOST_AUTO_TEST_CASE(whitespace_control) {
    // trim_blocks drops the newline after a block tag; lstrip_blocks drops the indentation before it.
    BOOST_CHECK_EQUAL(render("{% for x in [1, 2] %}\n  {% if x > 1 %}\n  big {{ x }}\n  {% endif %}\n{% endfor %}\n"), "  big 2\n");
    // "-" strips all whitespace on its side, newlines included; expressions are not lstripped.
    BOOST_CHECK_EQUAL(render("a \n {{- 'b' -}} \n c"), "abc");
    BOOST_CHECK_EQUAL(render("a\n  {{ 'b' }}"), "a\n  b");
    // "+" keeps what lstrip_blocks / trim_blocks would remove.
    BOOST_CHECK_EQUAL(render("x\n  {%+ if true %}y{% endif %}"), "x\n  y");
    BOOST_CHECK_EQUAL(render("{% if true +%}\nA{% endif %}"), "\nA");
    // Comments behave as block tags; one trailing newline of the template is dropped.
    BOOST_CHECK_EQUAL(render("a\n  {# note #}\nb\n"), "a\nb");
    BOOST_CHECK_EQUAL(render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
}

BOOST_AUTO_TEST_CASE(loops_scopes_and_namespace) {
    BOOST_CHECK_EQUAL(render("{% for x in 'ab' %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                             "{{ loop.revindex }};{% endfor %}"),
                      "10TrueFalse22;21FalseTrue21;");
    BOOST_CHECK_EQUAL(render("{% for x in range(6) if x is even %}{{ x }}{{ '/' if not loop.last }}{% else %}none{% endfor %}"), "0/2/4");
    BOOST_CHECK_EQUAL(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"), "a1b2");
    // A set inside a loop body is local to the iteration; a namespace carries state out.
    BOOST_CHECK_EQUAL(render("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for x in [1, 2, 3] %}{% set n = n + x %}"
                             "{% set ns.n = ns.n + x %}{% endfor %}{{ n }} {{ ns.n }}"),
                      "0 6");
    BOOST_CHECK_EQUAL(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% elif x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
                      "13");
    BOOST_CHECK_EQUAL(render("{% macro wrap(s, l='[', r=']') %}{{ l }}{{ s }}{{ r }}{% endmacro %}{{ wrap('x') }}{{ wrap('y', r='>') }}"),
                      "[x][y>");
}

BOOST_AUTO_TEST_CASE(values_filters_and_tests) {
    const ordered_json vars = ordered_json::parse(R"({"messages": [{"role": "system", "content": " s "},
        {"role": "user", "content": "héllo 🚀"}], "tools": null})");
    BOOST_CHECK_EQUAL(render("{{ messages[1:]|map(attribute='role')|join(',') }}|{{ messages[-1].content[::-1] }}|"
                             "{{ messages[0].content|trim }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}",
                             vars),
                      "user|🚀 olléh|s|1");
    BOOST_CHECK_EQUAL(render("{{ tools is none }} {{ tools is defined }} {{ missing is defined }} {{ (missing.x is defined) if missing is defined else 'no' }}",
                             vars),
                      "True True False no");
    BOOST_CHECK_EQUAL(render("{{ {'b': 'é', 'a': [1, 2.5, none]}|tojson }}"), R"({"b": "é", "a": [1, 2.5, null]})");
    BOOST_CHECK_EQUAL(render("{{ {'k': [1]}|tojson(indent=2) }}"), "{\n  \"k\": [\n    1\n  ]\n}");
    BOOST_CHECK_EQUAL(render("{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 'ab' * 2 }} {{ [1] + [2] }}"),
                      "3.5 3 2 0.30000000000000004 1e+16 abab [1, 2]");
    BOOST_CHECK_EQUAL(render("{{ ['a', none, true, {'k': \"it's\"}] }}"), "['a', None, True, {'k': \"it's\"}]");
    // Undefined: empty when printed, an error when used.
    BOOST_CHECK_EQUAL(render("[{{ nothing }}{{ nothing|length }}{{ nothing|default('d') }}]"), "[0d]");
    BOOST_CHECK(contains(error_of([] { render("{{ nothing.attr }}"); }), "'nothing' is undefined"));
    BOOST_CHECK(contains(error_of([] { render("{{ {}.a.b }}"); }), "'dict object' has no attribute 'a'"));
    // raise_exception: TemplateRaised with the template's own message and where it was raised.
    try {
        render("line one\n{{ raise_exception('Roles must alternate') }}");
        BOOST_ERROR("no exception");
    } catch (const jinja::TemplateRaised& e) {
        BOOST_CHECK_EQUAL(e.message(), "Roles must alternate");
        BOOST_CHECK_EQUAL(std::string(e.what()), "test template, line 2: Roles must alternate");
    }
}

BOOST_AUTO_TEST_CASE(render_variables) {
    const ChatTemplate t("{{ bos_token }}|{{ eos_token }}|{{ bos_token is defined }}|{{ tools }}|{{ date_string }}|"
                         "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{{ add_generation_prompt }}",
                         std::nullopt, std::string("</s>"));
    const std::vector<ChatMessage> msgs = {{"user", "hi"}};
    BOOST_CHECK_EQUAL(t.render(msgs, true), "|</s>|False|None||user:hi;True");
    BOOST_CHECK_EQUAL(t.render(msgs, false, {{"date_string", "1 Jan 2025"}, {"bos_token", "<s>"}}), "<s>|</s>|True|None|1 Jan 2025|user:hi;False");
    BOOST_CHECK(contains(error_of([&] { t.render(msgs, true, {{"messages", ordered_json::array()}}); }), "'messages' cannot be passed"));
    BOOST_CHECK(contains(error_of([&] { t.render_json(ordered_json::object(), true); }), "messages must be a JSON list"));
}

// ---------------------------------------------------------------------------------------------
// Loaders.

BOOST_AUTO_TEST_CASE(tokenizer_config_loader) {
    const auto dir = temp_dir("config");
    const std::string tmpl = "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}";
    ordered_json config = {{"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}, {"lstrip", false}}},
                           {"eos_token", "</s>"},
                           {"chat_template", tmpl}};
    write_file(dir / "tokenizer_config.json", config.dump());
    const ChatTemplate t = chat_template_from_tokenizer_config(dir / "tokenizer_config.json");
    BOOST_CHECK_EQUAL(t.source(), tmpl);
    BOOST_CHECK(t.bos_token() == std::optional<std::string>("<s>"));
    BOOST_CHECK(t.eos_token() == std::optional<std::string>("</s>"));
    BOOST_CHECK_EQUAL(t.render(std::vector<ChatMessage>{{"user", "a"}, {"assistant", "b"}}, false), "<s>[a][b]</s>");

    // Named templates: "default" is used.
    config["chat_template"] = ordered_json::array({{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}});
    config["bos_token"] = nullptr;
    config.erase("eos_token");
    write_file(dir / "tokenizer_config.json", config.dump());
    const ChatTemplate named = chat_template_from_tokenizer_config(dir / "tokenizer_config.json");
    BOOST_CHECK_EQUAL(named.source(), "D");
    BOOST_CHECK(!named.bos_token() && !named.eos_token());

    config["chat_template"] = ordered_json::array({{{"name", "tool_use"}, {"template", "T"}}, {{"name", "rag"}, {"template", "R"}}});
    write_file(dir / "tokenizer_config.json", config.dump());
    const std::string no_default = error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); });
    BOOST_CHECK(contains(no_default, "'tool_use', 'rag'") && contains(no_default, "'default'"));

    // No chat_template: chat_template.jinja beside the file, else an error.
    config.erase("chat_template");
    write_file(dir / "tokenizer_config.json", config.dump());
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); }), "has no 'chat_template'"));
    write_file(dir / "chat_template.jinja", "{{ messages|length }}");
    BOOST_CHECK_EQUAL(chat_template_from_tokenizer_config(dir / "tokenizer_config.json").render(std::vector<ChatMessage>{{"user", "x"}}, false), "1");

    // Bad files.
    write_file(dir / "tokenizer_config.json", "{\"chat_template\": ");
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); }), "not valid JSON"));
    write_file(dir / "tokenizer_config.json", R"({"chat_template": 5})");
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); }), "must be a string"));
    write_file(dir / "tokenizer_config.json", R"({"chat_template": "x", "eos_token": 3})");
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); }), "'eos_token'"));
    write_file(dir / "tokenizer_config.json", R"({"chat_template": "{% if %}"})");
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "tokenizer_config.json"); }), "line 1"));
    BOOST_CHECK(contains(error_of([&] { chat_template_from_tokenizer_config(dir / "missing.json"); }), "no such file"));
}

BOOST_AUTO_TEST_CASE(gguf_loader) {
    const auto gguf = io::GgufFile::open(kDir / "chat_template.gguf");
    const ChatTemplate t = chat_template_from_gguf(gguf);
    BOOST_CHECK_EQUAL(t.source(), read_file(kDir / "smollm2-135m-instruct.jinja"));
    BOOST_CHECK(t.bos_token() == std::optional<std::string>("<|im_start|>"));
    BOOST_CHECK(t.eos_token() == std::optional<std::string>("<|im_end|>"));
    const ChatTemplate fixture = load_fixture_template("smollm2-135m-instruct");
    const std::vector<ChatMessage> msgs = {{"user", "Hi"}};
    BOOST_CHECK_EQUAL(t.render(msgs, true), fixture.render(msgs, true));

    // A tokenizer-only GGUF without a chat template.
    const auto plain = io::GgufFile::open(std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "gguf" / "llama3_tokenizer.gguf");
    BOOST_CHECK(contains(error_of([&] { chat_template_from_gguf(plain); }), "tokenizer.chat_template"));

    // The released SmolLM2 file, when it is on this machine.
    const char* home = std::getenv("HOME");
    const auto real = std::filesystem::path(home ? home : "/root") / ".cache/deviant/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (std::filesystem::exists(real)) {
        const ChatTemplate released = chat_template_from_gguf(io::GgufFile::open(real));
        BOOST_CHECK_EQUAL(released.source(), fixture.source());
        BOOST_CHECK(released.bos_token() == fixture.bos_token() && released.eos_token() == fixture.eos_token());
    } else {
        BOOST_TEST_MESSAGE("skipped: " << real << " is not here");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input.

BOOST_AUTO_TEST_CASE(malformed_templates_throw) {
    const std::pair<const char*, const char*> bad[] = {
        {"{% if x %}no end", "never closed"},
        {"{% for x in y %}", "never closed"},
        {"a\n{% for x in y %}\n{% if x %}\n{% endfor %}", "line 4"},
        {"{% frobnicate %}", "unknown tag 'frobnicate'"},
        {"{% endif %}", "no block is open"},
        {"{% else %}", "no block is open"},
        {"{% if a %}{% else %}{% else %}{% endif %}", "unexpected '{% else %}'"},
        {"{{ 1 + }}", "unexpected"},
        {"{{ x", "never closed"},
        {"{% if x", "never closed"},
        {"{# comment", "never closed"},
        {"{{ 'abc }}", "never closed"},
        {"{{ [1, 2 }}", "unexpected"},
        {"{{ (1 + 2 }}", "unexpected"},
        {"{{ {'a' 1} }}", "expected ':'"},
        {"{{ x | }}", "filter name"},
        {"{{ x is }}", "test name"},
        {"{{ x.}}", "after '.'"},
        {"{{ }}", "expected an expression"},
        {"{% set %}", "variable name"},
        {"{% set true = 1 %}", "cannot assign"},
        {"{% macro %}{% endmacro %}", "macro name"},
        {"{% macro f(a=1, b) %}{% endmacro %}", "without a default"},
        {"{% for in x %}{% endfor %}", "variable name"},
        {"{% break %}", "outside a for loop"},
        {"{% for x in y %}{% macro m() %}{% break %}{% endmacro %}{% endfor %}", "outside a for loop"},
        {"{% include 'other.jinja' %}", "not supported"},
        {"{% for x in y recursive %}{% endfor %}", "recursive"},
        {"{{ 99999999999999999999 }}", "too large"},
        {"{{ '\\x4' }}", "escape"},
        {"{{ a ! b }}", "unexpected character"},
        {"{{ f(a=1, 2) }}", "positional argument follows"},
        {"{{ f(*args) }}", "not supported"},
        {"{% endfor %}", "no block is open"},
        {"{% if true %}{% endfor %}{% endif %}", "expected 'elif' or 'else' or 'endif'"},
        {"{% raw %}never closed", "endraw"},
        {"{{ x is defined is none }}", "chained"},
    };
    for (const auto& [tmpl, part] : bad) {
        BOOST_TEST_CONTEXT(tmpl) {
            const std::string what = error_of([&tmpl = tmpl] { jinja::Template t(tmpl, "bad"); });
            BOOST_CHECK_MESSAGE(contains(what, part), "message: " << what);
            BOOST_CHECK_MESSAGE(contains(what, "bad, line "), "message: " << what);
        }
    }
    // Errors at render time name the line too.
    BOOST_CHECK(contains(error_of([] { render("a\nb\n{{ 'x' + 1 }}"); }), "test template, line 3: can only concatenate str"));
    BOOST_CHECK(contains(error_of([] { render("{{ 'x'|frobnicate }}"); }), "unknown filter 'frobnicate'"));
    BOOST_CHECK(contains(error_of([] { render("{{ 'x'|truncate(2) }}"); }), "filter 'truncate' is not supported"));
    BOOST_CHECK(contains(error_of([] { render("{{ x is frobnicated }}"); }), "unknown test 'frobnicated'"));
    BOOST_CHECK(contains(error_of([] { render("{{ 9223372036854775807 + 1 }}"); }), "integer overflow"));
    BOOST_CHECK(contains(error_of([] { render("{{ 1 // 0 }}"); }), "division or modulo by zero"));
    BOOST_CHECK(contains(error_of([] { render("{{ x }}", ordered_json::array()); }), "must be a JSON object"));
    // Invalid UTF-8 passes through untouched.
    BOOST_CHECK_EQUAL(render("{{ s }}|{{ s|length }}|{{ s[1:] }}", {{"s", std::string("a\xff\xfe")}}), std::string("a\xff\xfe|3|\xff\xfe"));
}

BOOST_AUTO_TEST_CASE(runaway_templates_throw) {
    const auto repeat = [](const std::string& s, int n) {
        std::string out;
        for (int i = 0; i < n; ++i) out += s;
        return out;
    };
    const auto started = std::chrono::steady_clock::now();
    // Nesting in the source.
    BOOST_CHECK(contains(error_of([&] { jinja::Template t(repeat("{% if true %}", 20000) + repeat("{% endif %}", 20000)); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ " + repeat("(", 100000) + "1" + repeat(")", 100000) + " }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ " + repeat("[", 100000) + repeat("]", 100000) + " }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ " + repeat("not ", 100000) + "x }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ " + repeat("-", 100000) + "1 }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ 1" + repeat(" + 1", 100000) + " }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ x" + repeat("|trim", 100000) + " }}"); }), "levels deep"));
    BOOST_CHECK(contains(error_of([&] { jinja::Template t("{{ x" + repeat(".a", 100000) + " }}"); }), "levels deep"));
    // Within the limits, nesting works.
    BOOST_CHECK_EQUAL(render(repeat("{% if true %}", 40) + "deep" + repeat("{% endif %}", 40)), "deep");
    BOOST_CHECK_EQUAL(render("{{ " + repeat("(", 30) + "1" + repeat(")", 30) + " }}"), "1");

    // Recursion, loops and sizes at run time.
    BOOST_CHECK(contains(error_of([] { render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"); }), "recursed more than"));
    // Macro recursion within its limit, with deep expressions at every level: the run-time depth limit.
    BOOST_CHECK(contains(error_of([&] {
                             render("{% macro f(n) %}{{ " + repeat("[", 30) + "f(n - 1) if n > 0 else ''" + repeat("]", 30) +
                                    "|length }}{% endmacro %}{{ f(45) }}");
                         }),
                         "recursed more than 500 levels"));
    BOOST_CHECK(contains(error_of([] { render("{% for i in range(1000000000) %}{% endfor %}"); }), "range()"));
    BOOST_CHECK(contains(error_of([] { render("{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}"); }),
                         "loop iterations and calls"));
    BOOST_CHECK(contains(error_of([] { render("{{ 'x' * 10000000000 }}"); }), "bytes of text"));
    BOOST_CHECK(contains(error_of([] { render("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}"); }), "bytes of text"));
    BOOST_CHECK(contains(error_of([] { render("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"); }),
                         "bytes of text"));
    BOOST_CHECK(contains(error_of([] { render("{% set ns = namespace(l=[0]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}"); }),
                         "list of more than"));
    BOOST_CHECK(contains(error_of([] { render("{% for c in 'x' * 10000000 %}{% endfor %}"); }), "list of more than"));
    // Smaller limits apply.
    jinja::Limits small;
    small.max_output_bytes = 10;
    BOOST_CHECK(contains(error_of([&] { render("{{ 'abcdefghijkl' }}", ordered_json::object(), small); }), "10 bytes"));
    small = {};
    small.max_steps = 5;
    BOOST_CHECK(contains(error_of([&] { render("{% for x in [1,2,3,4,5,6] %}{% endfor %}", ordered_json::object(), small); }), "5 loop"));
    small = {};
    small.max_call_depth = 3;
    BOOST_CHECK(contains(error_of([&] {
                             render("{% macro f(n) %}{{ f(n - 1) if n > 0 }}{% endmacro %}{{ f(5) }}", ordered_json::object(), small);
                         }),
                         "recursed more than 3"));
    BOOST_CHECK_EQUAL(render("{% macro f(n) %}{{ n }}{{ f(n - 1) if n > 0 }}{% endmacro %}{{ f(2) }}", ordered_json::object(), small), "210");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    BOOST_TEST_MESSAGE("runaway cases took " << seconds << " s");
    BOOST_CHECK_LT(seconds, 60.0);
}

BOOST_AUTO_TEST_CASE(concurrent_renders_of_one_template) {
    const ChatTemplate t = load_fixture_template("llama-3.1-8b-instruct");
    const ordered_json extra = {{"date_string", "26 Jul 2024"}};
    const std::vector<ChatMessage> msgs = {{"system", "S"}, {"user", "U"}};
    const std::string want = t.render(msgs, true, extra);
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int k = 0; k < 4; ++k)
        threads.emplace_back([&] {
            for (int i = 0; i < 50; ++i)
                if (t.render(msgs, true, extra) != want) ++mismatches;
        });
    for (auto& th : threads) th.join();
    BOOST_CHECK_EQUAL(mismatches.load(), 0);
}
