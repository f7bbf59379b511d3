// AdamW, gradient clipping and learning-rate schedules against PyTorch / transformers
// (tests/data/optim/make_adamw_fixture.py), hand-worked values, and CPU vs CUDA.
#define BOOST_TEST_MODULE optim
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "op_harness.hpp"
#include "deviant/optim/adamw.hpp"
#include "deviant/optim/clip.hpp"
#include "deviant/optim/schedule.hpp"

using namespace deviant;
using namespace deviant::testing;
using nlohmann::json;

namespace {

const json& fixture() {
    static const json j = [] {
        std::ifstream in(std::string(DEVIANT_TEST_DATA_DIR) + "/optim/optim_expected.json");
        BOOST_TEST_REQUIRE(in.good());
        return json::parse(in);
    }();
    return j;
}

DType dtype_named(const std::string& s) {
    if (s == "float64") return DType::f64;
    if (s == "float32") return DType::f32;
    if (s == "bfloat16") return DType::bf16;
    throw Error("unknown dtype " + s);
}

Shape shape_of(const json& j) {
    Shape s;
    for (const auto& d : j) s.push_back(d.get<std::int64_t>());
    return s;
}

// |a - b| <= tol * max(|b|, floor) for every element.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what,
                 double floor = 1e-2) {
    BOOST_TEST_REQUIRE(got.size() == want.size());
    double worst = 0;
    std::size_t worst_i = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        double err = std::abs(got[i] - want[i]) / std::max(std::abs(want[i]), floor);
        if (!(err <= worst)) worst = err, worst_i = i;
    }
    BOOST_TEST_INFO(what << ": worst relative error " << worst << " at " << worst_i << " (got " << got[worst_i] << ", want "
                         << want[worst_i] << ")");
    BOOST_TEST(worst <= tol);
}

std::vector<Parameter*> pointers(std::deque<Parameter>& ps) {
    std::vector<Parameter*> out;
    for (auto& p : ps) out.push_back(&p);
    return out;
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        static int counter = 0;
        path = std::filesystem::temp_directory_path() / fmt::format("deviant-test-optim-{}-{}", ::getpid(), counter++);
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

// ---------------------------------------------------------------------------------- AdamW

BOOST_AUTO_TEST_CASE(adamw_matches_torch) {
    for (const auto& c : fixture()["adamw"]) {
        const std::string name = c["name"];
        const DType dt = dtype_named(c["dtype"]);
        const double tol = dt == DType::f64 ? 1e-6 : dt == DType::f32 ? 1e-5 : 8e-3;  // bf16: one unit in the last place
        BOOST_TEST_CONTEXT(name) {
            std::deque<Parameter> params;
            for (const auto& p : c["params"])
                params.emplace_back(p["name"].get<std::string>(), Tensor::from(p["init"].get<std::vector<double>>(), shape_of(p["shape"]), dt));
            const auto& o = c["options"];
            const bool master = c["master_weights"].get<bool>();
            optim::AdamW opt(pointers(params), {o["beta1"].get<double>(), o["beta2"].get<double>(), o["eps"].get<double>(),
                                                 o["weight_decay"].get<double>(), master});
            for (std::size_t k = 0; k < c["steps"].size(); ++k) {
                const auto& s = c["steps"][k];
                for (std::size_t i = 0; i < params.size(); ++i) {
                    const auto& g = s["grads"][i];
                    params[i].grad = g.is_null() ? Tensor() : Tensor::from(g.get<std::vector<double>>(), params[i].value.shape(), dt);
                }
                opt.step(s["lr"].get<double>());
                for (std::size_t i = 0; i < params.size(); ++i)
                    check_close(params[i].value.to_vector<double>(), c["after_step"][k][i].get<std::vector<double>>(), tol,
                                fmt::format("{} after step {}", params[i].name, k));
            }
            BOOST_TEST(opt.steps() == std::int64_t(c["steps"].size()));
            auto state = opt.state_tensors();
            std::map<std::string, Tensor> by_name(state.begin(), state.end());
            const double state_tol = dt == DType::f64 ? 1e-6 : 1e-5;  // bf16 weights still have fp32 state
            for (std::size_t i = 0; i < params.size(); ++i) {
                const auto& want = c["final_state"][i];
                const std::string& pn = params[i].name;
                BOOST_TEST((by_name.at(pn + ".exp_avg").dtype() == (dt == DType::f64 ? DType::f64 : DType::f32)));
                check_close(by_name.at(pn + ".exp_avg").to_vector<double>(), want["exp_avg"].get<std::vector<double>>(), state_tol,
                            pn + ".exp_avg", 1e-3);
                check_close(by_name.at(pn + ".exp_avg_sq").to_vector<double>(), want["exp_avg_sq"].get<std::vector<double>>(), state_tol,
                            pn + ".exp_avg_sq", 1e-5);
                BOOST_TEST(by_name.at(pn + ".step").item() == want["step"].get<double>());
                BOOST_TEST(by_name.count(pn + ".master") == std::size_t(master));
                if (master)  // float32 master: the accumulated updates, far below the weights' bf16 spacing
                    check_close(by_name.at(pn + ".master").to_vector<double>(), c["final_master"][i].get<std::vector<double>>(), 1e-6,
                                pn + ".master", 1e-3);
            }
        }
    }
}

// Why masters: at lr 1e-4 every bf16 update of a weight near 1 is below half its spacing (2^-8).
BOOST_AUTO_TEST_CASE(adamw_master_weights_keep_updates_bf16_would_round_away) {
    auto run = [](bool master) {
        Parameter p("w", Tensor::full({8}, 1.0, DType::bf16));
        optim::AdamW opt({&p}, {0.9, 0.999, 1e-8, 0.0, master});
        for (int s = 0; s < 100; ++s) {
            p.grad = Tensor::full({8}, 1.0, DType::bf16);
            opt.step(1e-4);
        }
        return std::make_pair(p.value.to_vector<double>()[0], master ? opt.master_of(p).to_vector<double>()[0] : 0.0);
    };
    Parameter f("w", Tensor::full({8}, 1.0, DType::f32));  // the float32 run the master must equal
    optim::AdamW of({&f}, {0.9, 0.999, 1e-8, 0.0});
    for (int s = 0; s < 100; ++s) f.grad = Tensor::full({8}, 1.0), of.step(1e-4);
    const double want = f.value.to_vector<double>()[0];
    BOOST_TEST(want < 0.991);  // about 100 x 1e-4 below 1
    auto [with_master, master_value] = run(true);
    BOOST_TEST(master_value == want);                                               // bit-exact: the same float32 math
    BOOST_TEST(with_master == double(float(bf16(float(want)))));                   // the weight is the master's rounding
    BOOST_TEST(run(false).first == 1.0);                                            // without a master nothing moved
}

// A bf16 parameter's gradient is float32 (Parameter::grad_dtype): the update reads it unrounded,
// so the master follows the float32 run bit for bit even when the gradient has no bf16 form.
BOOST_AUTO_TEST_CASE(adamw_bf16_parameter_takes_a_float32_gradient) {
    const double g0 = 1.0 + std::ldexp(1.0, -12), g1 = 3e-3 * (1.0 + std::ldexp(1.0, -10));  // below bf16's spacing
    BOOST_TEST(double(float(bf16(float(g0)))) != g0);
    Parameter f("w", Tensor::full({4}, 0.75, DType::f32)), b("w", Tensor::full({4}, 0.75, DType::bf16));
    BOOST_TEST((f.grad_dtype() == DType::f32 && b.grad_dtype() == DType::f32));
    optim::AdamW of({&f}, {0.9, 0.999, 1e-8, 0.0}), ob({&b}, {0.9, 0.999, 1e-8, 0.0});
    for (int s = 0; s < 20; ++s) {
        const double g = s % 2 ? g1 : g0;
        f.grad = Tensor::full({4}, g, DType::f32);
        b.grad = Tensor::full({4}, g, DType::f32);
        of.step(1e-3);
        ob.step(1e-3);
    }
    BOOST_TEST(ob.master_of(b).to_vector<double>() == f.value.to_vector<double>(), boost::test_tools::per_element());
    BOOST_TEST(b.value.to_vector<double>()[0] == double(float(bf16(float(f.value.to_vector<double>()[0])))));
    // Without a master the bf16 weight itself is updated from the float32 gradient.
    Parameter c("w", Tensor::full({4}, 0.75, DType::bf16));
    optim::AdamW oc({&c}, {0.9, 0.999, 1e-8, 0.0, /*master_weights=*/false});
    c.grad = Tensor::full({4}, g0, DType::f32);
    oc.step(0.1);
    BOOST_TEST(c.value.to_vector<double>()[0] < 0.75);
    // Any other gradient dtype is converted, never reinterpreted.
    Parameter d("w", Tensor::full({4}, 0.75, DType::bf16));
    optim::AdamW od({&d}, {0.9, 0.999, 1e-8, 0.0});
    d.grad = Tensor::full({4}, 1.0, DType::f64);
    od.step(0.1);
    BOOST_TEST(d.value.to_vector<double>()[0] < 0.75);
}

BOOST_AUTO_TEST_CASE(adamw_master_weights_checkpoint_and_refresh) {
    auto make = [] {
        std::mt19937 rng(9);
        return Parameter("w", random_tensor({6, 5}, rng, -1, 1, DType::bf16));
    };
    Parameter a = make(), b = make();
    optim::AdamW oa({&a}), ob({&b});
    auto grads = [](unsigned s) {
        std::mt19937 g(s);
        return random_tensor({6, 5}, g, -1, 1, DType::bf16);
    };
    for (unsigned s = 0; s < 3; ++s) a.grad = grads(s), oa.step(1e-3);
    b.value = a.value.clone();
    ob.load_state(oa.state_tensors(), "state");
    BOOST_TEST(ob.master_of(b).to_vector<double>() == oa.master_of(a).to_vector<double>());
    for (unsigned s = 3; s < 6; ++s) a.grad = grads(s), oa.step(1e-3), b.grad = grads(s), ob.step(1e-3);
    BOOST_TEST(a.value.to_vector<double>() == b.value.to_vector<double>());
    BOOST_TEST(oa.master_of(a).to_vector<double>() == ob.master_of(b).to_vector<double>());
    // State without masters (saved with master_weights off): the master is re-read from the weights.
    auto state = oa.state_tensors();
    std::erase_if(state, [](const auto& kv) { return kv.first == "w.master"; });
    Parameter c = make();
    c.value = a.value.clone();
    optim::AdamW oc({&c});
    oc.load_state(state, "state");
    BOOST_TEST(oc.master_of(c).to_vector<double>() == a.value.to_vector<double>());
    // refresh_masters() follows weights changed from outside.
    c.value.fill_(0.5);
    oc.refresh_masters();
    BOOST_TEST(oc.master_of(c).to_vector<double>() == std::vector<double>(30, 0.5));
    // float32 parameters and master_weights = false keep no master
    Parameter f("f", Tensor::ones({3}));
    optim::AdamW of({&f});
    BOOST_TEST(!of.master_of(f).defined());
    Parameter d = make();
    optim::AdamW od({&d}, {0.9, 0.999, 1e-8, 0.0, false});
    BOOST_TEST(!od.master_of(d).defined());
}

BOOST_AUTO_TEST_CASE(adamw_hand_worked_first_step) {
    // Step 1, wd 0.5, lr 0.1: p = 2 * (1 - 0.05) = 1.9; m = 0.1 g; v = 0.001 g^2;
    // m_hat = g, v_hat = g^2, so p -= 0.1 * g / (|g| + eps) = 1.9 - 0.1 * sign(g) (eps negligible).
    Parameter p("w", Tensor::from(std::vector<double>{2.0, 2.0}, {2}));
    p.grad = Tensor::from(std::vector<double>{3.0, -0.25}, {2});
    optim::AdamW opt({&p}, {0.9, 0.999, 1e-12, 0.5});
    opt.step(0.1);
    auto v = p.value.to_vector<double>();
    BOOST_TEST(std::abs(v[0] - 1.8) < 1e-10);
    BOOST_TEST(std::abs(v[1] - 2.0) < 1e-10);
}

BOOST_AUTO_TEST_CASE(adamw_skips_frozen_parameters_and_missing_gradients) {
    Parameter a("a", Tensor::ones({3}, DType::f32)), frozen("frozen", Tensor::ones({2}, DType::bf16)), b("b", Tensor::ones({2}, DType::bf16));
    frozen.trainable = false;
    frozen.grad = Tensor::ones({2}, DType::bf16);
    a.grad = Tensor::ones({3}, DType::f32);
    optim::AdamW opt({&a, &frozen, &b}, {});
    BOOST_TEST(opt.parameters().size() == 2u);
    opt.step(0.1);
    BOOST_TEST(a.value.to_vector<double>()[0] < 1.0);
    BOOST_TEST(frozen.value.to_vector<double>()[0] == 1.0);  // not trainable
    BOOST_TEST(b.value.to_vector<double>()[0] == 1.0);       // no gradient
    std::map<std::string, Tensor> st;
    for (auto& [n, t] : opt.state_tensors()) st[n] = t;
    BOOST_TEST(st.count("frozen.exp_avg") == 0u);
    BOOST_TEST((st.at("b.exp_avg").dtype() == DType::f32));  // fp32 state for bf16 weights
    BOOST_TEST(st.at("b.step").item() == 0.0);
    BOOST_TEST(st.at("a.step").item() == 1.0);
    BOOST_TEST(st.at("step").item() == 1.0);
    opt.zero_grad();
    BOOST_TEST(a.grad.to_vector<double>()[0] == 0.0);
}

BOOST_AUTO_TEST_CASE(adamw_rejects_bad_input) {
    Parameter a("a", Tensor::ones({3})), same("a", Tensor::ones({2}));
    BOOST_CHECK_THROW(optim::AdamW({&a, &a}), Error);
    BOOST_CHECK_THROW(optim::AdamW({&a, &same}), Error);
    BOOST_CHECK_THROW(optim::AdamW({&a}, {1.0, 0.999, 1e-8, 0.0}), Error);
    BOOST_CHECK_THROW(optim::AdamW({nullptr}), Error);
    optim::AdamW opt({&a});
    a.grad = Tensor::ones({4});
    BOOST_CHECK_EXCEPTION(opt.step(0.1), Error, [](const Error& e) { return std::string(e.what()).find("'a'") != std::string::npos; });
    a.grad = Tensor::ones({3});
    BOOST_CHECK_THROW(opt.step(std::nan("")), Error);
}

BOOST_AUTO_TEST_CASE(adamw_state_round_trip_continues_identically) {
    auto make = [](std::deque<Parameter>& ps) {
        std::mt19937 rng(3);
        ps.emplace_back("w", random_tensor({4, 3}, rng, -1, 1, DType::f32));
        ps.emplace_back("h", random_tensor({5}, rng, -1, 1, DType::bf16));
        ps.emplace_back("d", random_tensor({2, 2}, rng, -1, 1, DType::f64));
    };
    auto set_grads = [](std::deque<Parameter>& ps, unsigned seed) {
        std::mt19937 rng(seed);
        for (auto& p : ps) p.grad = random_tensor(p.value.shape(), rng, -1, 1, p.value.dtype());
    };
    std::deque<Parameter> a, b;
    make(a);
    make(b);
    optim::AdamW oa(pointers(a), {0.9, 0.99, 1e-8, 0.01});
    for (unsigned s = 0; s < 3; ++s) set_grads(a, s), oa.step(1e-2);
    for (std::size_t i = 0; i < a.size(); ++i) b[i].value = a[i].value.clone();

    TempDir dir;
    io::save_safetensors(dir.path / "optimizer.safetensors", oa.state_tensors());
    optim::AdamW ob(pointers(b), {0.9, 0.99, 1e-8, 0.01});
    ob.load_state(io::SafetensorsFile::open(dir.path / "optimizer.safetensors"));
    BOOST_TEST(ob.steps() == 3);
    {  // the CheckpointReader overload reads the same state
        std::deque<Parameter> r;
        make(r);
        optim::AdamW orr(pointers(r), {0.9, 0.99, 1e-8, 0.01});
        orr.load_state(io::CheckpointReader::open(dir.path / "optimizer.safetensors"));
        auto sa = oa.state_tensors(), sr = orr.state_tensors();
        BOOST_TEST_REQUIRE(sa.size() == sr.size());
        for (std::size_t i = 0; i < sa.size(); ++i) BOOST_TEST(sa[i].second.to_vector<double>() == sr[i].second.to_vector<double>());
        // a state file for other parameters is refused, naming the file
        Parameter other("other", Tensor::zeros({2}));
        optim::AdamW oo({&other});
        BOOST_CHECK_EXCEPTION(oo.load_state(io::SafetensorsFile::open(dir.path / "optimizer.safetensors")), Error, [](const Error& e) {
            std::string m = e.what();
            return m.find("optimizer.safetensors") != std::string::npos && m.find("other.exp_avg") != std::string::npos;
        });
    }
    for (unsigned s = 3; s < 6; ++s) {
        set_grads(a, s), oa.step(2e-2);
        set_grads(b, s), ob.step(2e-2);
    }
    for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(a[i].value.to_vector<double>() == b[i].value.to_vector<double>());
    // Without the restored state the continuation differs (the comparison above can fail).
    std::deque<Parameter> c;
    make(c);
    optim::AdamW oc(pointers(c), {0.9, 0.99, 1e-8, 0.01});
    for (unsigned s = 0; s < 3; ++s) set_grads(c, s), oc.step(1e-2);
    optim::AdamW fresh(pointers(c), {0.9, 0.99, 1e-8, 0.01});
    for (unsigned s = 3; s < 6; ++s) set_grads(c, s), fresh.step(2e-2);
    BOOST_TEST(c[0].value.to_vector<double>() != a[0].value.to_vector<double>());
}

BOOST_AUTO_TEST_CASE(adamw_load_state_validates_names_and_shapes) {
    Parameter w("w", Tensor::ones({2, 3})), v("v", Tensor::ones({4}));
    optim::AdamW opt({&w, &v});
    auto good = opt.state_tensors();
    auto expect_error = [&](std::vector<std::pair<std::string, Tensor>> state, const std::string& fragment) {
        BOOST_CHECK_EXCEPTION(opt.load_state(state, "opt.safetensors"), Error, [&](const Error& e) {
            std::string m = e.what();
            return m.find(fragment) != std::string::npos && m.find("opt.safetensors") != std::string::npos;
        });
    };
    auto missing = good;
    missing.erase(missing.begin() + 1);  // w.exp_avg_sq
    expect_error(missing, "missing tensor 'w.exp_avg_sq'");
    auto wrong_shape = good;
    wrong_shape[3].second = Tensor::zeros({5});  // v.exp_avg
    expect_error(wrong_shape, "'v.exp_avg' has shape (5,), expected (4,)");
    auto extra = good;
    extra.emplace_back("u.exp_avg", Tensor::zeros({1}));
    expect_error(extra, "'u.exp_avg'");
    BOOST_CHECK_NO_THROW(opt.load_state(good));
}

// ---------------------------------------------------------------------------------- clipping

BOOST_AUTO_TEST_CASE(clip_hand_worked) {
    Parameter a("a", Tensor::zeros({2}, DType::f64)), b("b", Tensor::zeros({1}, DType::f64)), none("none", Tensor::zeros({3}));
    a.grad = Tensor::from(std::vector<double>{3, 4}, {2});
    b.grad = Tensor::from(std::vector<double>{12}, {1});
    std::vector<Parameter*> ps{&a, &b, &none};
    BOOST_TEST(optim::global_grad_norm(ps) == 13.0);
    BOOST_TEST(optim::clip_grad_norm(ps, 20.0) == 13.0);  // below max: unchanged
    BOOST_TEST(a.grad.to_vector<double>()[0] == 3.0);
    BOOST_TEST(optim::clip_grad_norm(ps, 6.5) == 13.0);
    double s = 6.5 / (13.0 + 1e-6);
    BOOST_TEST(std::abs(a.grad.to_vector<double>()[1] - 4 * s) < 1e-15);
    BOOST_TEST(std::abs(b.grad.to_vector<double>()[0] - 12 * s) < 1e-15);
    BOOST_TEST(std::abs(optim::global_grad_norm(ps) - 6.5) < 1e-6);
}

BOOST_AUTO_TEST_CASE(clip_non_finite_leaves_gradients) {
    Parameter a("a", Tensor::zeros({2})), b("b", Tensor::zeros({1}));
    a.grad = Tensor::from(std::vector<float>{3, INFINITY}, {2});
    b.grad = Tensor::from(std::vector<float>{12}, {1});
    BOOST_TEST(std::isinf(optim::clip_grad_norm({&a, &b}, 1.0)));
    BOOST_TEST(b.grad.to_vector<double>()[0] == 12.0);
    a.grad = Tensor::from(std::vector<float>{3, NAN}, {2});
    BOOST_TEST(std::isnan(optim::clip_grad_norm({&a, &b}, 1.0)));
    BOOST_TEST(b.grad.to_vector<double>()[0] == 12.0);
    BOOST_CHECK_THROW(optim::clip_grad_norm({&a}, 0.0), Error);
}

BOOST_AUTO_TEST_CASE(clip_matches_torch) {
    for (const auto& c : fixture()["clip"]) {
        BOOST_TEST_CONTEXT(c["name"].get<std::string>()) {
            DType dt = dtype_named(c["dtype"]);
            double tol = dt == DType::f64 ? 1e-12 : 1e-6;
            std::deque<Parameter> ps;
            for (std::size_t i = 0; i < c["shapes"].size(); ++i) {
                Shape s = shape_of(c["shapes"][i]);
                ps.emplace_back(fmt::format("p{}", i), Tensor::zeros(s, dt));
                ps.back().grad = Tensor::from(c["grads"][i].get<std::vector<double>>(), s, dt);
            }
            double norm = optim::clip_grad_norm(pointers(ps), c["max_norm"].get<double>());
            BOOST_TEST(std::abs(norm - c["norm"].get<double>()) <= tol * c["norm"].get<double>());
            for (std::size_t i = 0; i < ps.size(); ++i)
                check_close(ps[i].grad.to_vector<double>(), c["clipped"][i].get<std::vector<double>>(), dt == DType::f64 ? 1e-12 : 1e-6,
                            ps[i].name, 1e-3);
        }
    }
}

BOOST_AUTO_TEST_CASE(grad_norm_of_bf16_accumulates_in_double) {
    // 100000 values of 0.01 (bf16-rounded): a float accumulator drifts, a double one does not.
    Parameter p("p", Tensor::zeros({100000}, DType::bf16));
    p.grad = Tensor::full({100000}, 0.01, DType::bf16);
    double x = double(float(bf16(0.01f)));
    BOOST_TEST(std::abs(optim::global_grad_norm({&p}) - std::sqrt(100000 * x * x)) < 1e-12);
}

BOOST_AUTO_TEST_CASE(grad_norm_of_many_blocks_matches_an_ordered_long_double_sum) {
    // 3.5 blocks of the CPU reduction and an odd tail: every block and the tail counted once, in
    // double, whatever the pool splits (a missed or twice-counted block is off by ~30%).
    const std::int64_t n = 7 * optim::detail::kSquaresBlock / 2 + 5;
    std::vector<double> xs(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) xs[std::size_t(i)] = std::sin(0.37 * double(i)) * (1.0 + double(i % 7));
    for (DType dt : {DType::f32, DType::f64}) {
        Parameter p("p", Tensor::zeros({n}, dt));
        p.grad = Tensor::from(xs, {n}, dt);
        long double ref = 0;
        for (double x : p.grad.to_vector<double>()) ref += (long double)x * x;
        const double got = optim::global_grad_norm({&p});
        BOOST_TEST(std::abs(got - std::sqrt(double(ref))) <= 1e-13 * std::sqrt(double(ref)));
        optim::clip_grad_norm({&p}, 1.0);  // the scaling runs on the pool too: every element scaled
        BOOST_TEST(std::abs(optim::global_grad_norm({&p}) - 1.0) < 1e-6);
    }
}

BOOST_AUTO_TEST_CASE(adamw_on_a_large_tensor_updates_every_element_as_torch) {
    // Large enough for the update to run on the thread pool: each element against torch.optim.AdamW's
    // formula in double (two steps, lr 1e-2, weight decay 0.1).
    const std::int64_t n = 200003;
    std::vector<double> w(static_cast<std::size_t>(n)), g(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
        w[std::size_t(i)] = std::cos(0.11 * double(i));
        g[std::size_t(i)] = std::sin(0.29 * double(i)) + 0.5;
    }
    Parameter p("w", Tensor::from(w, {n}, DType::f32));
    const double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    optim::AdamW opt({&p}, {b1, b2, eps, wd});
    std::vector<double> ref = p.value.to_vector<double>(), m(ref.size()), v(ref.size());
    for (int t = 1; t <= 2; ++t) {
        p.grad = Tensor::from(g, {n}, DType::f32);
        const std::vector<double> gf = p.grad.to_vector<double>();
        opt.step(lr);
        for (std::size_t i = 0; i < ref.size(); ++i) {
            ref[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * gf[i];
            v[i] = b2 * v[i] + (1 - b2) * gf[i] * gf[i];
            ref[i] -= lr / (1 - std::pow(b1, t)) * m[i] / (std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, t)) + eps);
        }
    }
    const std::vector<double> got = p.value.to_vector<double>();
    double worst = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
    BOOST_TEST(worst < 1e-6);
}

// ---------------------------------------------------------------------------------- schedules

BOOST_AUTO_TEST_CASE(schedules_match_transformers) {
    for (const auto& c : fixture()["schedules"]) {
        optim::LrSchedule s{optim::schedule_kind(c["kind"].get<std::string>()), c["base_lr"].get<double>(),
                            c["warmup_steps"].get<std::int64_t>(), c["total_steps"].get<std::int64_t>(), c["min_ratio"].get<double>()};
        const auto lrs = c["lrs"].get<std::vector<double>>();
        for (std::size_t k = 0; k < lrs.size(); ++k) {
            BOOST_TEST_INFO(c["kind"].get<std::string>() << " warmup " << s.warmup_steps << " total " << s.total_steps << " step " << k);
            BOOST_TEST(std::abs(s.at(std::int64_t(k)) - lrs[k]) <= 1e-12 * std::max(lrs[k], 1e-6));
        }
    }
}

BOOST_AUTO_TEST_CASE(schedule_hand_worked_and_errors) {
    optim::LrSchedule lin{optim::LrSchedule::Kind::linear, 1.0, 0, 10, 0.2};
    BOOST_TEST(std::abs(lin.at(5) - 0.6) < 1e-15);  // 0.5 * 0.8 + 0.2
    BOOST_TEST(std::abs(lin.at(12) - 0.2) < 1e-15);
    optim::LrSchedule cst{optim::LrSchedule::Kind::constant, 2.0, 4, 0};
    BOOST_TEST(cst.at(1) == 0.5);
    BOOST_TEST(cst.at(100) == 2.0);
    BOOST_CHECK_THROW(lin.at(-1), Error);
    BOOST_CHECK_THROW((optim::LrSchedule{optim::LrSchedule::Kind::cosine, 1.0, 0, 10, 1.5}.at(0)), Error);
    BOOST_CHECK_THROW(optim::schedule_kind("triangle"), Error);
}

// ---------------------------------------------------------------------------------- CUDA

BOOST_AUTO_TEST_CASE(adamw_cuda_matches_cpu, *boost::unit_test::precondition(cuda_device)) {
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        BOOST_TEST_CONTEXT(dtype_name(dt)) {
            std::mt19937 rng(11);
            Tensor init = random_tensor({257, 129}, rng, -1, 1, dt);  // odd sizes: several blocks, ragged end
            Parameter cpu("w", init.clone()), gpu("w", init.to(Device::cuda, dt, true));
            optim::AdamW oc({&cpu}, {0.9, 0.999, 1e-8, 0.1}), og({&gpu}, {0.9, 0.999, 1e-8, 0.1});  // bf16: with masters
            PoisonAllocations poison;
            for (unsigned s = 0; s < 4; ++s) {
                std::mt19937 g(100 + s);
                Tensor grad = random_tensor(init.shape(), g, -1, 1, dt);
                cpu.grad = grad.clone();
                gpu.grad = grad.to(Device::cuda, dt, true);
                oc.step(1e-2);
                og.step(1e-2);
            }
            double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-6 : 1e-2;
            BOOST_TEST((gpu.value.device() == Device::cuda));
            BOOST_TEST(relative_error(gpu.value.to_vector<double>(), cpu.value.to_vector<double>()) < tol);
            auto sc = oc.state_tensors(), sg = og.state_tensors();
            BOOST_TEST_REQUIRE(sc.size() == sg.size());
            BOOST_TEST(sc.size() == (dt == DType::bf16 ? 5u : 4u));  // bf16 also saves its master
            for (std::size_t i = 0; i < sc.size(); ++i)
                BOOST_TEST(relative_error(sg[i].second.to_vector<double>(), sc[i].second.to_vector<double>()) < (dt == DType::f64 ? 1e-12 : 1e-6));
        }
    }
}

BOOST_AUTO_TEST_CASE(grad_norm_and_clip_cuda_match_cpu, *boost::unit_test::precondition(cuda_device)) {
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        BOOST_TEST_CONTEXT(dtype_name(dt)) {
            std::mt19937 rng(5);
            Tensor g1 = random_tensor({1 << 20}, rng, -1, 1, dt), g2 = random_tensor({37, 3}, rng, -1, 1, dt);  // > 1024 blocks, and one
            Parameter c1("a", Tensor::zeros(g1.shape(), dt)), c2("b", Tensor::zeros(g2.shape(), dt));
            Parameter d1("a", Tensor::zeros(g1.shape(), dt, Device::cuda)), d2("b", Tensor::zeros(g2.shape(), dt, Device::cuda));
            c1.grad = g1.clone(), c2.grad = g2.clone();
            d1.grad = g1.to(Device::cuda), d2.grad = g2.to(Device::cuda);
            double nc = optim::global_grad_norm({&c1, &c2}), nd = optim::global_grad_norm({&d1, &d2});
            BOOST_TEST(std::abs(nc - nd) <= 1e-12 * nc);
            optim::clip_grad_norm({&c1, &c2}, 1.0);
            optim::clip_grad_norm({&d1, &d2}, 1.0);
            BOOST_TEST(relative_error(d1.grad.to_vector<double>(), c1.grad.to_vector<double>()) < (dt == DType::bf16 ? 1e-2 : 1e-6));
            BOOST_TEST(std::abs(optim::global_grad_norm({&d1, &d2}) - 1.0) < (dt == DType::bf16 ? 1e-2 : 1e-5));
        }
    }
}

// The batched reduction: more tensors than one launch's table (64), mixed dtypes, empty and tiny ones.
BOOST_AUTO_TEST_CASE(grad_norm_over_many_tensors_cuda_matches_cpu, *boost::unit_test::precondition(cuda_device)) {
    std::mt19937 rng(17);
    std::deque<Parameter> cpu, gpu;
    const DType dtypes[] = {DType::f32, DType::bf16, DType::f64};
    for (int i = 0; i < 150; ++i) {
        const DType dt = dtypes[i % 3];
        const std::int64_t n = i % 37 == 0 ? 0 : (i % 5 == 0 ? 70000 + i : 1 + i * 13);
        Tensor g = random_tensor({n}, rng, -1, 1, dt);
        cpu.emplace_back("p" + std::to_string(i), Tensor::zeros({n}, dt));
        gpu.emplace_back("p" + std::to_string(i), Tensor::zeros({n}, dt, Device::cuda));
        cpu.back().grad = g.clone();
        gpu.back().grad = g.to(Device::cuda);
    }
    const double nc = optim::global_grad_norm(pointers(cpu)), nd = optim::global_grad_norm(pointers(gpu));
    BOOST_TEST(nc > 0);
    BOOST_TEST(std::abs(nc - nd) <= 1e-12 * nc);
}

// The multi-tensor update: more parameters than one launch's table (36), f32 and bf16 (with and
// without masters), a parameter without a gradient, odd sizes; CUDA against the CPU loop.
BOOST_AUTO_TEST_CASE(adamw_many_parameters_cuda_matches_cpu, *boost::unit_test::precondition(cuda_device)) {
    for (bool masters : {true, false}) {
        BOOST_TEST_CONTEXT("master weights " << masters) {
            std::mt19937 rng(23);
            std::deque<Parameter> cpu, gpu;
            for (int i = 0; i < 80; ++i) {
                const DType dt = i % 2 ? DType::bf16 : DType::f32;
                Tensor init = random_tensor({1 + i * 97}, rng, -1, 1, dt);
                cpu.emplace_back("p" + std::to_string(i), init.clone());
                gpu.emplace_back("p" + std::to_string(i), init.to(Device::cuda, dt, true));
            }
            optim::AdamW oc(pointers(cpu), {0.9, 0.999, 1e-8, 0.05, masters}), og(pointers(gpu), {0.9, 0.999, 1e-8, 0.05, masters});
            PoisonAllocations poison;
            for (unsigned s = 0; s < 3; ++s) {
                for (std::size_t i = 0; i < cpu.size(); ++i) {
                    if (i == 7 && s == 1) {  // no gradient this step: skipped on both devices
                        cpu[i].grad = Tensor(), gpu[i].grad = Tensor();
                        continue;
                    }
                    Tensor g = random_tensor(cpu[i].value.shape(), rng, -1, 1, cpu[i].value.dtype());
                    cpu[i].grad = g.clone();
                    gpu[i].grad = g.to(Device::cuda);
                }
                oc.step(1e-3);
                og.step(1e-3);
            }
            for (std::size_t i = 0; i < cpu.size(); ++i) {
                const double tol = cpu[i].value.dtype() == DType::bf16 ? 1e-2 : 1e-6;
                BOOST_TEST(relative_error(gpu[i].value.to_vector<double>(), cpu[i].value.to_vector<double>()) < tol, "parameter " << i);
            }
            auto sc = oc.state_tensors(), sg = og.state_tensors();
            BOOST_TEST_REQUIRE(sc.size() == sg.size());
            for (std::size_t i = 0; i < sc.size(); ++i)
                BOOST_TEST(relative_error(sg[i].second.to_vector<double>(), sc[i].second.to_vector<double>()) < 1e-5, sc[i].first);
        }
    }
}
