from setuptools import find_packages, setup

setup(
    name="wce_fairseq",
    version="0.2.0",
    license="MIT",
    description=("Encouraging loss (Zhao et al., AAAI 2022) for fairseq, Hugging Face and TRL: criterion, task, "
                 "trainer integration, compiled operators, fast kernels"),
    # the plugin (what --user-dir loads) and, beside it, the recipes' data preparation
    packages=find_packages(include=["wce_fairseq", "wce_fairseq.*", "wce_fairseq_recipes"]),
    python_requires=">=3.8",
    # Installing the plugin must never replace the torch or fairseq a user
    # already has: torch is required only at a version every supported fairseq
    # runs with, and fairseq is not declared at all (users have fairseq 0.12.2,
    # a fork such as ve-fairseq, or fairseq main from git, under different
    # names). scripts/setup_env.sh installs the pinned environment.
    install_requires=["torch>=1.12"],
    extras_require={
        "triton": ["triton"],
        # what the recipes under examples/ use besides fairseq (none pulls torch)
        "recipes": ["sacrebleu>=2.0", "sentencepiece", "sacremoses", "subword-nmt", "matplotlib"],
        # wce_fairseq.integrations.hf; accelerate needs torch >= 2.0, which it leaves alone when present
        "hf": ["transformers>=4.46", "accelerate>=0.26"],
        # TRL's SFTTrainer with the adapter, and LoRA
        "trl": ["transformers>=4.56", "accelerate>=1.10", "trl>=1.0", "peft"],
    },
)
