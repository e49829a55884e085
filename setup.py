"""kerasnets: efficient CNNs from the literature, taken to int8 TFLite and TFLite Micro."""
from setuptools import setup

setup(
    name="kerasnets",
    version="0.1.0",
    description="Efficient convolutional networks in tf-keras, from papers to phones and microcontrollers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    # One import namespace: the repository keeps its top-level folders, users get kerasnets.*
    packages=["kerasnets", "kerasnets.pipelines", "kerasnets.pipelines.prune", "kerasnets.micro",
              "kerasnets.tools"],
    package_dir={
        "kerasnets": "kerasnets",
        "kerasnets.pipelines": "pipelines",
        "kerasnets.pipelines.prune": "pipelines/prune",
        "kerasnets.micro": "micro",
        "kerasnets.tools": "tools",
    },
    install_requires=[
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        "tensorflow-model-optimization==0.8.1",
        "ai-edge-litert",
        "tflite-micro",
        "absl-py",
        "numpy",
        "tqdm",
        "scikit-learn",
        "ml-collections",
        "pyyaml",
        "jinja2",
        "matplotlib",
        "tensorboard",
    ],
    # svhn and caltech101 come through tensorflow-datasets (with pyarrow and friends, ~100 MB: not
    # worth it for everyone); its etils.epath imports importlib_resources without requiring it.
    # The tests prepare both offline and open the report in Chromium through Selenium.
    # Arm's Vela compiler for `bench --target ethos-u*` and the lint's NPU check (numpy, flatbuffers only).
    # pytest < 9: pytest-xdist 3.8 marks a test's group by rewriting its node id in a way pytest 9
    # ignores, so `--dist loadgroup` would spread the firmware tests (and their TFLM builds) over workers.
    extras_require={"tfds": ["tensorflow-datasets", "importlib_resources"],
                    "npu": ["ethos-u-vela"],
                    "test": ["pytest>=8,<9", "pytest-xdist", "opencv-python-headless", "selenium",
                             "tensorflow-datasets", "importlib_resources", "ethos-u-vela"]},
    package_data={"kerasnets": ["pretrained/*"], "kerasnets.micro": ["firmware/*"],
                  "kerasnets.tools": ["android_apk/*", "android_apk/jni/*",
                                      "android_apk/src/com/kerasnets/benchmark/*"]},
    entry_points={"console_scripts": ["kerasnets=kerasnets.tools.cli:run"]},
)
