"""Probe routers on a small (M)LLM's hidden states: Probe, Attention Probe, ReLope (PAPERS.md section 2).

A probe predicts whether the small model will answer correctly from its own hidden states; the
queries it doubts most are deferred to a large model. Stages, one module each:

- :mod:`~mmroute.probes.arch`: where a backbone keeps its layers (layer ``l`` = ``hidden_states[l]``);
- :mod:`~mmroute.probes.inputs` / :mod:`~mmroute.probes.extract` / :mod:`~mmroute.probes.cache`:
  table rows -> backbone inputs -> a Lightning predict loop that stops after layer ``l`` -> a
  sharded safetensors cache of layer l-1 token states, positions and layer-l last-token states;
- :mod:`~mmroute.probes.replay`: layer ``l`` run alone over cached states, optionally with LoRA;
- :mod:`~mmroute.probes.heads` (plain modules) and :mod:`~mmroute.probes.lit` (LightningModules);
- :mod:`~mmroute.probes.train`: the :class:`ProbeRouter` estimator;
- :mod:`~mmroute.probes.evaluation`: AUROC, hybrid curve, perturbations, leave-one-dataset-out;
- :mod:`~mmroute.probes.export`: ONNX with a parity check;
- :mod:`~mmroute.probes.forward`: the backbone run up to layer ``l`` (torch only; serving uses it);
- :mod:`~mmroute.probes.costs` / :mod:`~mmroute.probes.deferral`: billed costs (a deferral pays the
  small model's prefill) and deferral thresholds calibrated on training rows.

The routers of the registry built on these heads are :mod:`mmroute.routers.probe`; the served
model is :mod:`mmroute.export.probe_pyfunc`; the tracked experiment behind ``mmroute probe train``
and the probe stage of sweeps are recipes: :mod:`mmroute.pipeline.probe`.

Submodules import torch/Lightning; import them directly (this package imports nothing heavy).
"""
