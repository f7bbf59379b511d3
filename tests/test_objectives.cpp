// Preference objectives against an independent PyTorch reference (tests/data/objectives/
// make_objective_fixtures.py, the formulas of method.md): batch loss and the gradient with
// respect to the policy log-probs, for every objective and option. Plus the identities
// DDPO(w=1) == DPO and DORPO(w=1) == ORPO, ORPO's odds ratio near zero, and error paths.
#define BOOST_TEST_MODULE objectives
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "deviant/objectives/registry.hpp"

using namespace deviant;
using nlohmann::json;

namespace {

Tensor vec(const json& j) { return Tensor::from(j.get<std::vector<double>>(), {std::int64_t(j.size())}); }

struct Batch {
    Parameter chosen, rejected, chosen_full;
    PairLogps logps(Tape& t, const json& c) {
        PairLogps b;
        b.chosen_logp = t.param(chosen);
        b.rejected_logp = t.param(rejected);
        b.chosen_full_logp = t.param(chosen_full);
        b.chosen_tokens = vec(c["chosen_tokens"]);
        b.rejected_tokens = vec(c["rejected_tokens"]);
        b.chosen_full_tokens = vec(c["chosen_full_tokens"]);
        b.ref_chosen_logp = vec(c["ref_chosen_logp"]);
        b.ref_rejected_logp = vec(c["ref_rejected_logp"]);
        b.chosen_weight = vec(c["weight"]);
        return b;
    }
    explicit Batch(const json& c)
        : chosen("chosen", vec(c["chosen_logp"])), rejected("rejected", vec(c["rejected_logp"])),
          chosen_full("chosen_full", vec(c["chosen_full_logp"])) {}
};

ObjectiveOptions options_of(const json& o) {
    ObjectiveOptions opt;
    if (o.contains("beta")) opt.beta = o["beta"].get<double>();
    if (o.contains("lambda")) opt.lambda = o["lambda"];
    if (o.contains("gamma")) opt.gamma = o["gamma"];
    if (o.contains("label_smoothing")) opt.label_smoothing = o["label_smoothing"];
    if (o.contains("nll_alpha")) opt.nll_alpha = o["nll_alpha"];
    opt.orpo_nll_includes_prompt = o.value("prompt_nll", false);
    if (o.value("released_code", false)) opt.dorpo_placement = losses::WeightPlacement::released_code;
    opt.ipo_average = o.value("ipo_average", true);
    // every option of the fixture is understood: an unknown name would silently test the default
    for (auto& [key, value] : o.items())
        BOOST_REQUIRE_MESSAGE((std::set<std::string>{"beta", "lambda", "gamma", "label_smoothing", "nll_alpha", "prompt_nll",
                                                     "released_code", "ipo_average"}.count(key)),
                              "unknown fixture option " << key);
    return opt;
}

// A parameter that no term used has no gradient: that is a zero gradient.
std::vector<double> grad_of(const Parameter& p) {
    return p.grad.defined() ? p.grad.to_vector<double>() : std::vector<double>(std::size_t(p.value.numel()), 0.0);
}

double rel(const std::vector<double>& a, const std::vector<double>& b) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace

BOOST_AUTO_TEST_CASE(objectives_match_pytorch_reference) {
    std::ifstream in(DEVIANT_TEST_DATA_DIR "/objectives/objective_cases.json");
    BOOST_REQUIRE(in);
    json fixture = json::parse(in);
    int n = 0;
    for (const json& c : fixture["cases"]) {
        std::string name = c["objective"];
        BOOST_TEST_CONTEXT(name << " " << c["options"].dump()) {
            AnyObjective obj = make_objective(name, options_of(c["options"]));
            Batch batch(c);
            Tape tape;
            ObjectiveResult r = obj(batch.logps(tape, c));
            tape.backward(r.loss);
            double want = c["loss"];
            BOOST_TEST(std::abs(r.loss.value().item() - want) <= 1e-10 * std::max(1.0, std::abs(want)));
            BOOST_TEST(r.metrics.get("loss") == r.loss.value().item());
            BOOST_TEST(rel(grad_of(batch.chosen), c["grad_chosen"]) < 1e-10);
            BOOST_TEST(rel(grad_of(batch.rejected), c["grad_rejected"]) < 1e-10);
            BOOST_TEST(rel(grad_of(batch.chosen_full), c["grad_chosen_full"]) < 1e-10);
            ++n;
        }
    }
    BOOST_TEST(n == 63);  // 21 variants x 3 batches
}

// With every weight 1 the weighted objectives are bit-identical to the unweighted ones.
BOOST_AUTO_TEST_CASE(weighted_with_unit_weights_equals_unweighted) {
    std::ifstream in(DEVIANT_TEST_DATA_DIR "/objectives/objective_cases.json");
    json c = json::parse(in)["cases"][0];
    c["weight"] = std::vector<double>(c["weight"].size(), 1.0);
    for (auto [plain, weighted] : {std::pair{"dpo", "ddpo"}, std::pair{"orpo", "dorpo"}}) {
        Batch b1(c), b2(c);
        Tape t1, t2;
        auto r1 = make_objective(plain)(b1.logps(t1, c));
        auto r2 = make_objective(weighted)(b2.logps(t2, c));
        t1.backward(r1.loss);
        t2.backward(r2.loss);
        BOOST_TEST(r1.loss.value().item() == r2.loss.value().item());
        BOOST_TEST(b1.chosen.grad.to_vector<double>() == b2.chosen.grad.to_vector<double>());
        BOOST_TEST(b1.rejected.grad.to_vector<double>() == b2.rejected.grad.to_vector<double>());
    }
}

// ORPO's odds ratio stays finite for mean log-probs down to -1e-8 (float32 and float64).
BOOST_AUTO_TEST_CASE(orpo_odds_ratio_finite_near_zero) {
    for (DType dt : {DType::f32, DType::f64}) {
        for (double a : {-1e-8, -1e-7, -1e-5, -1e-3}) {
            Parameter c("c", Tensor::from(std::vector<double>{a, a * 3}, {2}, dt));
            Parameter r("r", Tensor::from(std::vector<double>{-2.0, -1e-8}, {2}, dt));
            Tape t;
            PairLogps b;
            b.chosen_logp = t.param(c);
            b.rejected_logp = t.param(r);
            b.chosen_tokens = b.rejected_tokens = Tensor::ones({2}, dt);
            auto res = make_objective("orpo")(b);
            t.backward(res.loss);
            BOOST_TEST(std::isfinite(res.loss.value().item()));
            BOOST_TEST(std::isfinite(res.metrics.get("log_odds_chosen")));
            for (double g : c.grad.to_vector<double>()) BOOST_TEST(std::isfinite(g));
            for (double g : r.grad.to_vector<double>()) BOOST_TEST(std::isfinite(g));
        }
    }
}

BOOST_AUTO_TEST_CASE(trl_metric_names) {
    std::ifstream in(DEVIANT_TEST_DATA_DIR "/objectives/objective_cases.json");
    json c = json::parse(in)["cases"][0];
    Batch b(c);
    Tape t;
    auto dpo = make_objective("dpo")(b.logps(t, c));
    for (auto name : {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"})
        BOOST_TEST(dpo.metrics.contains(name), name);
    Tape t2;
    Batch b2(c);
    auto orpo = make_objective("orpo")(b2.logps(t2, c));
    for (auto name : {"nll_loss", "log_odds_ratio", "log_odds_chosen"}) BOOST_TEST(orpo.metrics.contains(name), name);
}

BOOST_AUTO_TEST_CASE(bad_batches_are_errors) {
    std::ifstream in(DEVIANT_TEST_DATA_DIR "/objectives/objective_cases.json");
    json c = json::parse(in)["cases"][0];
    {  // empty completion in pair 2
        json e = c;
        e["rejected_tokens"][2] = 0.0;
        Batch b(e);
        Tape t;
        BOOST_CHECK_EXCEPTION(make_objective("dpo")(b.logps(t, e)), Error,
                              [](const Error& err) { return std::string(err.what()).find("pair 2") != std::string::npos; });
    }
    {  // reference-based objective without reference log-probs
        Batch b(c);
        Tape t;
        PairLogps p = b.logps(t, c);
        p.ref_chosen_logp = Tensor();
        BOOST_CHECK_THROW(make_objective("dpo")(p), Error);
    }
    {  // negative weight
        json e = c;
        e["weight"][1] = -1.0;
        Batch b(e);
        Tape t;
        BOOST_CHECK_THROW(make_objective("ddpo")(b.logps(t, e)), Error);
    }
    BOOST_CHECK_THROW(make_objective("kto"), Error);
}
