"""Runs in the tflite-support virtualenv (not kerasnets'): classifies uint8 RGB images with the
Android Task Library's ImageClassifier and prints one JSON list of {label: score} per image.

    python task_library_child.py MODEL.tflite IMAGES.npy
"""
import json
import sys

import numpy as np
from tflite_support.task import core, processor, vision


def main(model_path, images_path):
    options = vision.ImageClassifierOptions(
        base_options=core.BaseOptions(file_name=model_path),
        classification_options=processor.ClassificationOptions(max_results=-1))
    classifier = vision.ImageClassifier.create_from_options(options)
    results = []
    for pixels in np.load(images_path):
        categories = classifier.classify(vision.TensorImage.create_from_array(pixels)).classifications[0].categories
        results.append({c.category_name: c.score for c in categories})
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
