//! Interventions through hook points, checked against the plain forward pass of a
//! model changed by hand to do the same; and mistakes at the boundaries a notebook
//! user types into, answered with errors that name the problem.

use groklens::adamw::AdamW;
use groklens::measures::accuracy;
use groklens::trainer::Trainer;
use groklens::{last_logits, HookPoint, HookedTransformer, ModelConfig, RunConfig, Task};
use tch::{Device, Kind, Tensor};

fn small_model(n_layers: i64) -> (HookedTransformer, Tensor) {
    let task = Task::power_sum(11, 4, 4);
    let cfg = ModelConfig { n_layers, d_model: 16, d_head: 8, n_heads: 2, d_mlp: 32, ..ModelConfig::for_task(&task) };
    let model = HookedTransformer::new(&cfg, Device::Cpu).unwrap();
    // Biases too, so that an intervention that forgot one would show.
    let model = groklens::rng::seeded(5, || model.map_parameters(|_, t| t + 0.05 * t.randn_like()));
    (model, task.dataset())
}

fn gap(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn zeroing_a_heads_pattern_is_that_head_removed() {
    let (model, tokens) = small_model(2);
    let head = 1;
    let mut zero = |p: &Tensor| {
        let p = p.copy();
        let _ = p.narrow(1, head, 1).fill_(0.0);
        Some(p)
    };
    let ablated = model.run_with_hooks(&tokens, &mut [("blocks.1.attn.hook_pattern", &mut zero)]).unwrap();
    // By hand: the head writes nothing when its rows of W_O are zero.
    let by_hand = model.map_parameters(|name, t| {
        let t = t.copy();
        if name == "blocks.1.attn.W_O" {
            let _ = t.narrow(0, head, 1).fill_(0.0);
        }
        t
    });
    let expected = by_hand.forward(&tokens).unwrap();
    assert!(gap(&ablated, &expected) < 1e-5, "gap {}", gap(&ablated, &expected));
    assert!(gap(&ablated, &model.forward(&tokens).unwrap()) > 1e-3, "the ablation changed nothing");
}

#[test]
fn patching_a_neuron_is_that_neuron_made_a_constant() {
    let (model, tokens) = small_model(1);
    let (neuron, value) = (5, 0.75);
    let mut patch = |post: &Tensor| {
        let post = post.copy();
        let _ = post.narrow(2, neuron, 1).fill_(value);
        Some(post)
    };
    let patched = model.run_with_hooks(&tokens, &mut [("blocks.0.mlp.hook_post", &mut patch)]).unwrap();
    // By hand: the neuron's out-weights move into the output bias, times the constant.
    let w_out = model.blocks[0].mlp.W_out.get(neuron);
    let by_hand = model.map_parameters(|name, t| match name {
        "blocks.0.mlp.W_out" => {
            let t = t.copy();
            let _ = t.narrow(0, neuron, 1).fill_(0.0);
            t
        }
        "blocks.0.mlp.b_out" => t + value * &w_out,
        _ => t.copy(),
    });
    let expected = by_hand.forward(&tokens).unwrap();
    assert!(gap(&patched, &expected) < 1e-5, "gap {}", gap(&patched, &expected));
    // The cache sees the patched activation downstream, not upstream.
    let mut seen = None;
    let mut look = |post: &Tensor| {
        seen = Some(post.copy());
        None
    };
    let _ = model
        .run_with_hooks(&tokens, &mut [("blocks.0.mlp.hook_post", &mut patch), ("blocks.0.mlp.hook_post", &mut look)]);
    let seen = seen.expect("the second hook ran");
    assert!(seen.narrow(2, neuron, 1).eq(value).all().int64_value(&[]) == 1, "hooks run in the order given");
}

#[test]
fn hooks_at_unknown_or_missing_points_are_errors() {
    let (model, tokens) = small_model(1);
    let mut nothing = |_: &Tensor| None;
    let error = model.run_with_hooks(&tokens, &mut [("blocks.0.attn.hook_nothing", &mut nothing)]).unwrap_err();
    assert!(error.to_string().contains("no hook point named `blocks.0.attn.hook_nothing`"), "{error}");
    let error = model.run_with_hooks(&tokens, &mut [("blocks.3.hook_resid_pre", &mut nothing)]).unwrap_err();
    assert!(error.to_string().contains("past this model's 1 layer"), "{error}");

    let (_, cache) = model.run_with_cache(&tokens).unwrap();
    assert_eq!(cache.items().map(|(p, _)| p).collect::<Vec<_>>(), model.hook_points());
    assert!(cache.get("blocks.0.hook_nothing").is_none());
    assert!(cache.require("blocks.2.hook_resid_pre").unwrap_err().to_string().contains("no activation"));
    assert!(cache.require("resid_pre").unwrap_err().to_string().contains("no hook point named"));
    assert_eq!(cache.require("blocks.0.mlp.hook_post").unwrap().size(), [121, 3, 32]);
    assert_eq!(cache[("post", 0)].size(), [121, 3, 32]);
    assert_eq!(HookPoint::act("attn", 0).unwrap(), "blocks.0.attn.hook_pattern".parse().unwrap());
}

#[test]
fn bad_tokens_and_bad_shapes_are_errors_not_panics() {
    let (model, tokens) = small_model(1);
    let expect = |result: groklens::Result<Tensor>, needle: &str| {
        let error = result.err().unwrap_or_else(|| panic!("expected an error with `{needle}`"));
        assert!(error.to_string().contains(needle), "`{needle}` not in: {error}");
    };
    expect(model.forward(&tokens.flatten(0, 1)), "tokens must be [batch, pos] int64");
    expect(model.forward(&tokens.to_kind(Kind::Float)), "int64");
    expect(model.forward(&Tensor::cat(&[&tokens, &tokens], 1)), "1 ≤ pos ≤ n_ctx = 3");
    expect(model.forward(&(&tokens + 1)), "token 12 is outside the vocabulary 0..12");
    expect(model.forward(&(&tokens - 1)), "token -1 is outside");
    expect(last_logits(&model, &(&tokens * 100)), "outside the vocabulary");
    expect(model.run_with_cache(&tokens.flatten(0, 1)).map(|(l, _)| l), "tokens must be");

    let logits = last_logits(&model, &tokens).unwrap();
    let labels = Task::power_sum(11, 4, 4).labels();
    assert!(accuracy(&logits, &labels, &[0, 1, 2]).unwrap() >= 0.0);
    assert!(accuracy(&logits, &labels, &[121]).unwrap_err().to_string().contains("outside the 121 rows"));
    assert!(accuracy(&logits.get(0), &labels, &[0]).unwrap_err().to_string().contains("accuracy needs"));

    let error = Trainer::stacked(&[]).err().expect("no runs");
    assert!(error.to_string().contains("no runs to train"), "{error}");
    let two_layers = RunConfig { model: model.cfg.clone(), ..RunConfig::for_task(Task::power_sum(11, 4, 4)) };
    let deep = HookedTransformer::new(&ModelConfig { n_layers: 2, ..model.cfg.clone() }, Device::Cpu).unwrap();
    let split = groklens::Split::seeded(121, 0.5, 1).unwrap();
    let error = Trainer::new(&two_layers, &deep, &split).err().expect("a model not of its config");
    assert!(error.to_string().contains("model must be of its config"), "{error}");

    let w = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    assert!(AdamW::new(vec![w.shallow_clone()], &[1e-3], &[1.0], (0.9, 0.98))
        .err()
        .unwrap()
        .to_string()
        .contains("2 learning rates"));
    let mut adam = AdamW::new(vec![w.shallow_clone()], &[1e-3; 2], &[1.0; 2], (0.9, 0.98)).unwrap();
    assert!(adam.step(&[]).unwrap_err().to_string().contains("one gradient per parameter"));
    assert!(adam.step(&[Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))]).unwrap_err().to_string().contains("shape"));
    assert!(adam.step(&[w.zeros_like()]).is_ok());
}
