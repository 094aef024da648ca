import sys, torch, logging; sys.path.insert(0,'.')
logging.basicConfig(level=logging.INFO)
from pii.run import digits
(xt, yt), (xs, ys) = digits.digits_split()
clf = digits.train(digits.model_config("digits_judge"), xt, yt, 10, seed=2000, shift=3, colour=0.5, polarity=0.5)
torch.save(clf.net.state_dict(), "outputs/digits/judge_polarity.pt")
print("test acc", digits.accuracy(clf, xs, ys), "inverted-polarity test acc", digits.accuracy(clf, 1 - xs, ys))
