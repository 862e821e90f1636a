import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.models import InstanceNorm, build_model, init_params


@pytest.mark.parametrize("size,depth,width,feat", [(8, 2, 16, 2 * 2 * 16), (32, 3, 128, 2048)])
def test_convnet_shapes(size, depth, width, feat):
    model = build_model("convnet", 10, depth=depth, width=width)
    params = init_params(model, jax.random.key(0), (size, size, 3))
    x = jnp.ones((2, size, size, 3))
    chex.assert_shape(model.apply(params, x), (2, 10))
    chex.assert_shape(model.apply(params, x, method="features"), (2, feat))


def test_resnet18_matches_pytorch_parameter_count():
    model = build_model("resnet18", 10)
    params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), (32, 32, 3)))
    # torchvision-style CIFAR ResNet-18 with affine norms has 11,173,962 parameters.
    assert sum(p.size for p in jax.tree.leaves(params)) == 11_173_962


@pytest.mark.slow
def test_resnet50_forward_shape():
    model = build_model("resnet50", 7)
    params = init_params(model, jax.random.key(0), (8, 8, 3))
    chex.assert_shape(model.apply(params, jnp.ones((1, 8, 8, 3))), (1, 7))


def test_pytorch_default_init_bounds():
    model = build_model("convnet", 10, depth=2, width=32)
    params = init_params(model, jax.random.key(1), (8, 8, 3))["params"]
    k = params["convs_1"]["Conv_0"]["kernel"]  # fan_in = 3*3*32
    bound = 1 / np.sqrt(3 * 3 * 32)
    assert float(jnp.max(jnp.abs(k))) <= bound
    # uniform on ±bound has std bound/√3
    np.testing.assert_allclose(float(jnp.std(k)), bound / np.sqrt(3), rtol=0.05)
    b = params["convs_1"]["Conv_0"]["bias"]
    assert float(jnp.max(jnp.abs(b))) <= bound and float(jnp.std(b)) > 0
    head_b = params["head"]["bias"]
    assert float(jnp.max(jnp.abs(head_b))) <= 1 / np.sqrt(2 * 2 * 32)
    assert float(jnp.std(head_b)) > 0


def test_instance_norm_normalises_each_example_and_channel():
    x = jax.random.normal(jax.random.key(0), (3, 5, 5, 4)) * 7 + 3
    norm = InstanceNorm()
    y = norm.apply(norm.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(np.asarray(y.mean(axis=(1, 2))), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y.var(axis=(1, 2))), 1, atol=1e-3)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", 10)


def test_a_users_own_flax_model_gets_a_clear_error_or_works_with_a_feature_function():
    import flax.linen as nn

    from jaxunlearn.models import init_fn_for
    from jaxunlearn.partition import partition_by_class

    class Net(nn.Module):  # a user's model: no head submodule, no features method
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    model = Net()
    params = init_fn_for(model, (4, 4, 1))(jax.random.key(0))  # its own initialisation
    x = np.random.default_rng(0).random((30, 4, 4, 1)).astype(np.float32)
    y = np.arange(30) % 3
    with pytest.raises(ValueError, match="pass your own feature function"):
        partition_by_class(model.apply, params, x, y, num_classes=3, ipc=2, key=jax.random.key(1))
    out = partition_by_class(model.apply, params, x, y, num_classes=3, ipc=2,
                             key=jax.random.key(1), method=None)  # the output as features
    assert out.sizes.sum() == 30
