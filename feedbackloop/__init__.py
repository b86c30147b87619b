"""feedbackloop: real-time personalized feedback loops on AWS."""
