#ifndef KERASNETS_RESNET8_MODEL_SETTINGS_H_
#define KERASNETS_RESNET8_MODEL_SETTINGS_H_

namespace resnet8_model {

constexpr int kInputHeight = 32;
constexpr int kInputWidth = 32;
constexpr int kInputChannels = 3;
constexpr int kInputSize = kInputHeight * kInputWidth * kInputChannels;
constexpr float kInputScale = 0.007843137718737125f;
constexpr int kInputZeroPoint = 0;
constexpr float kOutputScale = 0.00390625f;
constexpr int kOutputZeroPoint = -128;
constexpr int kCategoryCount = 10;
// Measured with the TFLite Micro interpreter plus scratch headroom (see arena.json).
constexpr int kTensorArenaSize = 61456;

constexpr const char* kCategoryLabels[kCategoryCount] = {
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck"};

}  // namespace resnet8_model

#endif  // KERASNETS_RESNET8_MODEL_SETTINGS_H_
