"""Reinforcement learning: a DQN with an attention Q-network on a gymnasium environment.

Deep Q-learning (Mnih et al. 2015) with Double DQN targets (van Hasselt et al. 2016)
and n-step returns (Sutton 1988; as in Rainbow): an epsilon-greedy policy fills a replay
buffer with transitions ``(s, a, R, s', terminated, discount)``, where ``R`` sums ``n``
discounted rewards and ``discount = gamma ** n`` (fewer steps at an episode's end);
minibatches from it train the :class:`~attnkit.models.AttentionQNetwork` on the Huber
loss against ``R + discount * Q_target(s', argmax_a Q_online(s', a))`` (``terminated``
stops the bootstrap; a time-limit truncation does not); the target network follows the
online one softly (``tau``) or by periodic copies.

Evaluation is greedy and batched (all episodes step together). Every
``evaluation.every_steps`` environment steps the policy plays ``evaluation.episodes``
*validation* episodes; the best policy is kept, and training stops early once it reaches
``evaluation.stop_return``. The kept policy then plays ``evaluation.final_episodes``
*test* episodes on other seeds, whose mean and standard deviation go to
``runs/NAME/results.json``; ``learning_curve.png`` plots training and validation returns.

Seeds: training resets with ``env.reset(seed=seed)`` once (later resets continue that
stream); validation episode ``i`` uses seed ``seed + 1_000_000 + i``, test episode ``i``
``seed + 2_000_000 + i``. The network, exploration and replay sampling are seeded too.
"""

from __future__ import annotations

import copy
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from attnkit.models import AttentionQNetwork, AttentionQNetworkConfig
from attnkit.recipes.common import (
    RunRecipe,
    prepare_run_dir,
    reject_derived_fields,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict

__all__ = [
    "DQNAgent",
    "DQNSettings",
    "EnvSettings",
    "EvalSettings",
    "NStepWindow",
    "ReinforcementRecipe",
    "ReplayBuffer",
    "Transitions",
    "epsilon_at",
    "evaluate_policy",
    "td_loss",
    "train_reinforcement",
]

VALID_SEED_OFFSET, TEST_SEED_OFFSET = 1_000_000, 2_000_000


@dataclass
class EnvSettings:
    """A gymnasium environment with a flat observation vector and discrete actions."""

    id: str = "CartPole-v1"
    max_episode_steps: int | None = None  # None: the environment's own limit


@dataclass
class DQNSettings:
    """The DQN algorithm: budget, replay, optimisation, target network, exploration."""

    total_steps: int = 100_000  # environment steps at most
    buffer_size: int = 50_000
    batch_size: int = 128
    learning_starts: int = 1_000  # random-action steps before the first update
    train_every: int = 1  # environment steps between updates
    gradient_steps: int = 1  # updates each time
    gamma: float = 0.99
    n_step: int = 1  # rewards summed per transition before bootstrapping
    lr: float = 1e-3
    grad_clip: float | None = 10.0
    huber_delta: float = 1.0
    double: bool = True
    target_update: Literal["soft", "hard"] = "soft"
    tau: float = 0.005  # soft: target <- tau * online + (1 - tau) * target every update
    target_update_every: int = 500  # hard: copy every this many updates
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_decay_steps: int = 10_000  # linear decay over these environment steps

    def __post_init__(self) -> None:
        for name in ("total_steps", "buffer_size", "batch_size", "train_every", "n_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"agent.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("gradient_steps", "target_update_every", "eps_decay_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"agent.{name} must be >= 1; got {getattr(self, name)}")
        if self.learning_starts < self.batch_size:
            raise ConfigError(
                f"agent.learning_starts must be >= agent.batch_size ({self.batch_size}); "
                f"got {self.learning_starts}"
            )
        if not 0.0 < self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"agent.gamma and agent.tau must be in (0, 1]; got {self}")
        if not 0.0 <= self.eps_end <= self.eps_start <= 1.0:
            raise ConfigError(
                f"need 0 <= agent.eps_end <= agent.eps_start <= 1; got {self.eps_end}, "
                f"{self.eps_start}"
            )


@dataclass
class EvalSettings:
    """Greedy evaluation: periodic on validation seeds, final on test seeds."""

    every_steps: int = 2_500
    episodes: int = 50
    final_episodes: int = 100
    stop_return: float | None = 500.0  # stop once a validation mean reaches it
    target_return: float = 475.0  # the return reported as "solved"

    def __post_init__(self) -> None:
        for name in ("every_steps", "episodes", "final_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"evaluation.{name} must be >= 1; got {getattr(self, name)}")


@dataclass
class ReinforcementRecipe(RunRecipe):
    """A DQN experiment; ``model`` holds :class:`AttentionQNetworkConfig` fields
    (``obs_dim`` and ``num_actions`` come from the environment)."""

    name: str = "reinforcement"
    task: Literal["reinforcement"] = "reinforcement"
    output_dir: str | None = None
    env: EnvSettings = field(default_factory=EnvSettings)
    model: dict[str, Any] = field(default_factory=dict)
    agent: DQNSettings = field(default_factory=DQNSettings)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    seed: int = 0
    max_minutes: float | None = 15.0  # training wall time (the final evaluation is extra)
    threads: int | None = 1  # torch threads; 1 is fastest for a network this small

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, ("obs_dim", "num_actions"), "the environment")
        from_dict(AttentionQNetworkConfig, self.model, prefix="model")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or null; got {self.threads}")
        self._set_output_dir()


@dataclass
class Transitions:
    """A minibatch: ``obs``/``next_obs (B, obs_dim)`` float, ``actions (B,)`` int64,
    ``rewards (B,)`` float (discounted sums over up to n steps), ``terminated (B,)`` float
    (1 = no bootstrap), ``discounts (B,)`` float (the bootstrap's factor, ``gamma ** k``)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor
    discounts: Tensor


class ReplayBuffer:
    """A fixed-capacity ring buffer of transitions; the oldest are overwritten first."""

    def __init__(self, capacity: int, obs_dim: int) -> None:
        if capacity < 1 or obs_dim < 1:
            raise ValueError(f"capacity and obs_dim must be >= 1; got {capacity}, {obs_dim}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.position = 0  # next slot to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: Any,
        action: int,
        reward: float,
        next_obs: Any,
        terminated: bool,
        discount: float,
    ) -> None:
        """Store one transition (``obs``/``next_obs``: ``(obs_dim,)``)."""
        i = self.position
        self.obs[i], self.next_obs[i] = obs, next_obs
        self.actions[i], self.rewards[i], self.terminated[i] = action, reward, float(terminated)
        self.discounts[i] = discount
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = rng.integers(0, self.size, size=batch_size)
        return Transitions(
            torch.from_numpy(self.obs[index]),
            torch.from_numpy(self.actions[index]),
            torch.from_numpy(self.rewards[index]),
            torch.from_numpy(self.next_obs[index]),
            torch.from_numpy(self.terminated[index]),
            torch.from_numpy(self.discounts[index]),
        )


class NStepWindow:
    """Turns one-step experience into n-step transitions for a :class:`ReplayBuffer`.

    ``push`` one step at a time; once ``n`` steps are held the oldest leaves as
    ``(s_t, a_t, r_t + gamma r_{t+1} + ... + gamma^{n-1} r_{t+n-1}, s_{t+n}, terminated,
    gamma^n)``. At an episode's end every held step leaves with the rewards that remain
    (termination stops the bootstrap; truncation bootstraps from the last observation).
    """

    def __init__(self, buffer: ReplayBuffer, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        self.buffer, self.n, self.gamma = buffer, n, gamma
        self.steps: deque[tuple[Any, int, float]] = deque()

    def push(
        self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool, done: bool
    ) -> None:
        """Add one environment step; ``done``: the episode ended (terminated or truncated)."""
        self.steps.append((obs, action, reward))
        if len(self.steps) == self.n:
            self._emit(next_obs, terminated)
        if done:
            while self.steps:
                self._emit(next_obs, terminated)

    def _emit(self, next_obs: Any, terminated: bool) -> None:
        """The oldest held step with the discounted sum of the held rewards."""
        total = sum(self.gamma**k * reward for k, (_, _, reward) in enumerate(self.steps))
        obs, action, _ = self.steps.popleft()
        discount = self.gamma ** (len(self.steps) + 1)
        self.buffer.add(obs, action, total, next_obs, terminated, discount)


def epsilon_at(step: int, settings: DQNSettings) -> float:
    """Exploration rate after ``step`` environment steps: linear from start to end."""
    fraction = min(step / settings.eps_decay_steps, 1.0)
    return settings.eps_start + fraction * (settings.eps_end - settings.eps_start)


def td_loss(
    online: nn.Module,
    target: nn.Module,
    batch: Transitions,
    *,
    double: bool = True,
    huber_delta: float = 1.0,
) -> Tensor:
    """Mean Huber loss of ``Q(s, a)`` against the (Double) DQN target
    ``R + discount * (1 - terminated) * Q_target(s', a*)``."""
    size = batch.obs.size(0)
    if double:  # the online network picks the next action, the target network values it
        # One online pass over s and s' together: small networks are bound by call overhead.
        both = online(torch.cat([batch.obs, batch.next_obs])).logits
        current, best = both[:size], both[size:].detach().argmax(1, keepdim=True)
    else:
        current = online(batch.obs).logits
    q = current.gather(1, batch.actions[:, None])[:, 0]
    with torch.no_grad():
        next_target = target(batch.next_obs).logits
        if not double:
            best = next_target.argmax(1, keepdim=True)
        bootstrap = next_target.gather(1, best)[:, 0] * (1.0 - batch.terminated)
        goal = batch.rewards + batch.discounts * bootstrap
    return F.huber_loss(q, goal, delta=huber_delta)


class DQNAgent:
    """An online Q-network, its target copy and their optimiser."""

    def __init__(self, network: nn.Module, settings: DQNSettings) -> None:
        self.online = network
        self.target = copy.deepcopy(network).eval().requires_grad_(False)
        self.settings = settings
        # fused: one kernel for all parameters (several times faster for ~20 small tensors)
        self.optimizer = torch.optim.Adam(network.parameters(), lr=settings.lr, fused=True)
        self.updates = 0

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions ``(B,)`` for observations ``(B, obs_dim)`` (eval mode: no dropout)."""
        was_training = self.online.training
        self.online.eval()
        q = self.online(torch.as_tensor(obs, dtype=torch.float32)).logits
        self.online.train(was_training)
        return q.argmax(1).numpy()

    def update(self, batch: Transitions) -> float:
        """One gradient step on ``batch``, then the target update; returns the loss."""
        s = self.settings
        loss = td_loss(
            self.online,
            self.target,
            batch,
            double=s.double,
            huber_delta=s.huber_delta,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.online.parameters(), s.grad_clip)
        self.optimizer.step()
        self.updates += 1
        self._update_target()
        return float(loss.detach())

    @torch.no_grad()
    def _update_target(self) -> None:
        s = self.settings
        if s.target_update == "hard":
            if self.updates % s.target_update_every == 0:
                self.target.load_state_dict(self.online.state_dict())
            return
        for target, online in zip(self.target.parameters(), self.online.parameters(), strict=True):
            target.lerp_(online, s.tau)


def _make_env(settings: EnvSettings) -> Any:
    try:
        import gymnasium
    except ImportError:  # an optional dependency: the rl extra
        raise ImportError(
            "the reinforcement recipes need gymnasium: pip install 'attnkit[rl]'"
        ) from None
    return gymnasium.make(settings.id, max_episode_steps=settings.max_episode_steps)


def evaluate_policy(agent: DQNAgent, env_settings: EnvSettings, seeds: list[int]) -> np.ndarray:
    """Returns of greedy episodes, one per seed, played side by side (batched actions)."""
    envs = [_make_env(env_settings) for _ in seeds]
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)])
    returns = np.zeros(len(seeds))
    alive = np.ones(len(seeds), dtype=bool)
    while alive.any():
        rows = np.flatnonzero(alive)
        actions = agent.greedy(obs[rows])
        for row, action in zip(rows, actions, strict=True):
            obs[row], reward, terminated, truncated, _ = envs[row].step(int(action))
            returns[row] += reward
            alive[row] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


@dataclass
class History:
    """What the learning curve shows: training episodes and validation evaluations."""

    episode_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_means: list[float] = field(default_factory=list)
    eval_stds: list[float] = field(default_factory=list)
    eval_td_losses: list[float | None] = field(default_factory=list)  # mean since the last


def build_network(recipe: ReinforcementRecipe, env: Any) -> AttentionQNetwork:
    """The recipe's Q-network, sized to ``env``'s observation and action spaces."""
    obs_shape, actions = env.observation_space.shape, getattr(env.action_space, "n", None)
    if obs_shape is None or len(obs_shape) != 1 or actions is None:
        raise ValueError(
            f"{recipe.env.id}: need a flat Box observation and Discrete actions; got "
            f"{env.observation_space} and {env.action_space}"
        )
    config = AttentionQNetworkConfig(obs_dim=obs_shape[0], num_actions=int(actions), **recipe.model)
    return AttentionQNetwork(config)


class _Run:
    """The training loop's state: environment, buffer, agent, clock, best policy."""

    def __init__(self, recipe: ReinforcementRecipe) -> None:
        self.recipe = recipe
        torch.manual_seed(recipe.seed)
        self.rng = np.random.default_rng(recipe.seed)
        self.env = _make_env(recipe.env)
        network = build_network(recipe, self.env)
        self.agent = DQNAgent(network, recipe.agent)
        self.buffer = ReplayBuffer(recipe.agent.buffer_size, network.config.obs_dim)
        self.window = NStepWindow(self.buffer, recipe.agent.n_step, recipe.agent.gamma)
        self.history = History()
        self.losses: list[float] = []  # TD losses since the last evaluation
        self.best_mean, self.best_step = -float("inf"), 0
        self.best_state = copy.deepcopy(network.state_dict())
        self.valid_seeds = [
            recipe.seed + VALID_SEED_OFFSET + i for i in range(recipe.evaluation.episodes)
        ]
        self.started = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60.0

    def act(self, obs: np.ndarray, step: int) -> int:
        """Epsilon-greedy action (uniformly random until ``learning_starts``)."""
        settings = self.recipe.agent
        if step <= settings.learning_starts or self.rng.random() < epsilon_at(step, settings):
            return int(self.rng.integers(self.env.action_space.n))
        return int(self.agent.greedy(obs[None])[0])

    def train(self) -> tuple[int, str]:
        """Play and learn until a stop condition; returns ``(steps, stop reason)``."""
        agent_settings, evaluation = self.recipe.agent, self.recipe.evaluation
        obs, _ = self.env.reset(seed=self.recipe.seed)
        episode_return = 0.0
        for step in range(1, agent_settings.total_steps + 1):
            action = self.act(obs, step)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            done = terminated or truncated
            self.window.push(obs, action, float(reward), next_obs, terminated, done)
            episode_return += float(reward)
            obs = next_obs
            if done:
                self.history.episode_steps.append(step)
                self.history.episode_returns.append(episode_return)
                obs, episode_return = self.env.reset()[0], 0.0
            if step > agent_settings.learning_starts:
                self._learn(step)
                if step % evaluation.every_steps == 0 and self.evaluate(step):
                    return step, f"validation mean return reached {evaluation.stop_return:g}"
            if self.recipe.max_minutes is not None and self.minutes() >= self.recipe.max_minutes:
                return step, f"time limit of {self.recipe.max_minutes:g} minutes"
        return agent_settings.total_steps, f"reached total_steps={agent_settings.total_steps}"

    def _learn(self, step: int) -> None:
        settings = self.recipe.agent
        if step % settings.train_every:
            return
        for _ in range(settings.gradient_steps):
            self.losses.append(self.agent.update(self.buffer.sample(settings.batch_size, self.rng)))

    def evaluate(self, step: int) -> bool:
        """Validation episodes; keeps the best policy; True when it is good enough to stop."""
        returns = evaluate_policy(self.agent, self.recipe.env, self.valid_seeds)
        mean, std = float(returns.mean()), float(returns.std())
        history = self.history
        history.eval_steps.append(step)
        history.eval_means.append(mean)
        history.eval_stds.append(std)
        loss = float(np.mean(self.losses)) if self.losses else None  # None: no update yet
        history.eval_td_losses.append(loss)
        self.losses = []
        if mean > self.best_mean:
            self.best_mean, self.best_step = mean, step
            self.best_state = copy.deepcopy(self.agent.online.state_dict())
        recent = history.episode_returns[-20:]
        print(
            f"step {step:>7}  episodes {len(history.episode_returns):>5}  "
            f"train return (last 20) {np.mean(recent) if recent else 0:6.1f}  "
            f"valid {mean:6.1f} ± {std:5.1f}  eps {epsilon_at(step, self.recipe.agent):.3f}  "
            f"td loss {loss if loss is not None else float('nan'):.4f}  "
            f"{self.minutes():5.2f} min",
            flush=True,
        )
        stop = self.recipe.evaluation.stop_return
        return stop is not None and mean >= stop


def plot_learning_curve(history: History, path: Path, *, target: float | None = None) -> Path:
    """Training episode returns (with a 20-episode moving mean) and validation means ± std
    against environment steps."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    steps, returns = np.asarray(history.episode_steps), np.asarray(history.episode_returns)
    if len(returns):
        axes.plot(steps, returns, color="tab:blue", alpha=0.25, lw=0.8, label="training episode")
        window = min(20, len(returns))
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"mean of {window}")
    if history.eval_steps:
        axes.errorbar(
            history.eval_steps,
            history.eval_means,
            yerr=history.eval_stds,
            color="tab:orange",
            marker="o",
            capsize=3,
            label="greedy validation (mean ± std)",
        )
    if target is not None:
        axes.axhline(target, color="gray", ls="--", lw=1, label=f"target {target:g}")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("episode return")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=100)
    return path


def train_reinforcement(recipe: ReinforcementRecipe, *, resume: bool = False) -> dict[str, Any]:
    """Train the DQN, keep the best validation policy, evaluate it on test seeds."""
    if resume:
        raise ValueError("reinforcement runs do not resume (they are minutes long); start anew")
    out = prepare_run_dir(recipe)
    threads = torch.get_num_threads()
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    try:
        return _train_and_report(recipe, out)
    finally:
        torch.set_num_threads(threads)


def _train_and_report(recipe: ReinforcementRecipe, out: Path) -> dict[str, Any]:
    run = _Run(recipe)
    steps, reason = run.train()
    train_wall_s = time.monotonic() - run.started
    if not run.history.eval_steps:  # too short for a periodic evaluation: judge the last
        run.evaluate(steps)
    run.agent.online.load_state_dict(run.best_state)
    save_file(run.agent.online.state_dict(), str(out / "model.safetensors"))
    test_seeds = [
        recipe.seed + TEST_SEED_OFFSET + i for i in range(recipe.evaluation.final_episodes)
    ]
    returns = evaluate_policy(run.agent, recipe.env, test_seeds)
    history = run.history
    plot_learning_curve(history, out / "learning_curve.png", target=recipe.evaluation.target_return)
    (out / "history.json").write_text(json.dumps(history.__dict__))
    mean = float(returns.mean())
    results = {
        "env": recipe.env.id,
        "test_mean_return": mean,
        "test_std_return": float(returns.std()),
        "test_min_return": float(returns.min()),
        "test_episodes": len(returns),
        "solved": mean >= recipe.evaluation.target_return,
        "target_return": recipe.evaluation.target_return,
        "best_valid_mean_return": run.best_mean,
        "best_step": run.best_step,
        "env_steps": steps,
        "episodes": len(history.episode_returns),
        "updates": run.agent.updates,
        "parameters": sum(p.numel() for p in run.agent.online.parameters()),
        "model_config": run.agent.online.config.to_dict(),
        "train_wall_s": train_wall_s,
        "total_wall_s": time.monotonic() - run.started,
        "summary": {"stop_reason": reason, "message": reason, "steps": steps},
    }
    write_results(out, results)
    print(
        f"test return {mean:.1f} ± {results['test_std_return']:.1f} over {len(returns)} "
        f"episodes (policy of step {run.best_step}); trained {train_wall_s / 60:.1f} min"
    )
    return results
