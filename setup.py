from setuptools import find_packages, setup

setup(
    name="wce_fairseq",
    version="0.1.0",
    description="Encouraging loss (Zhao et al., AAAI 2022) for fairseq: criterion, task, fast kernels",
    packages=find_packages(include=["wce_fairseq", "wce_fairseq.*"]),
    python_requires=">=3.9",
    # torch and fairseq are installed by scripts/setup_env.sh with exact pins
    # (see the README: the fairseq fork must be installed without torchaudio).
    install_requires=["torch>=2.0"],
    extras_require={"fairseq": ["ve-fairseq==0.12.3"], "triton": ["triton"]},
)
